"""Where doodleNet's batched occlusion spends its time: drawing, composites, the CNN.

  python benchmarks/attribution_parts.py

Same 32 real drawings as benchmarks/attribution_throughput.py; mean seconds of 3 calls
after one warm-up, each part jitted on its own.
"""

import pathlib
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import attribution_throughput as bench  # noqa: E402
from sketchjax.data import soft_rasterize as sr  # noqa: E402
from sketchjax.methods import attribution  # noqa: E402
from sketchjax.models import doodlenet  # noqa: E402


def seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(3):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / 3


def main():
  drawings = bench._drawings(32)
  model, variables, _ = doodlenet.load_doodlenet(bench.SHARED / "pretrained" / "doodlenet")
  settings = sr.OFFICIAL
  xy, lens, num_segments = sr.pad_batch([sr.official_pixels(d.sketch.strokes) for d in drawings])
  num_pairs = sr.tile_pair_budget(xy, lens, settings)
  batch_pairs = sr.tile_pair_budget(xy, lens, settings, batch_total=True)
  per_sketch = jax.jit(jax.vmap(lambda x, l: sr.draw_strokes(
      x, l, settings, num_segments=num_segments, num_pairs=num_pairs)))
  no_culling = jax.jit(jax.vmap(lambda x, l: sr.draw_strokes(
      x, l, settings, num_segments=num_segments)))
  coverage = jax.jit(lambda x, l: sr.draw_batch(x, l, settings, num_segments=num_segments,
                                                num_pairs=batch_pairs))
  drawn = coverage(xy, lens)
  pairs = jnp.asarray(attribution.deletion_pairs(lens))
  composites = jax.jit(lambda c, p: jax.vmap(lambda b, k: sr.composite(
      c[b] * (jnp.arange(c.shape[1]) != k)[:, None, None]))(p[:, 0], p[:, 1]))
  images = composites(drawn, pairs)
  cnn = jax.jit(lambda im: model.apply(variables, im[..., None])[0])
  one = jax.jit(lambda x, l: sr.soft_rasterize(x, l, settings, num_segments=num_segments,
                                               num_pairs=num_pairs))
  print(f"{len(drawings)} sketches, {num_segments} segments and {num_pairs} (segment, tile) "
        f"pairs a sketch ({batch_pairs} for the batch packed), {len(pairs)} deletions")
  print(f"draw every stroke of the batch, packed pairs:     {seconds(coverage, xy, lens):.4f} s")
  print(f"  the same, pairs padded per sketch (vmap):       {seconds(per_sketch, xy, lens):.4f} s")
  print(f"  the same, no culling (every segment, every tile): "
        f"{seconds(no_culling, xy, lens):.4f} s")
  print(f"composite every deletion:                         "
        f"{seconds(composites, drawn, pairs):.4f} s")
  print(f"doodleNet on every deletion:                      {seconds(cnn, images):.4f} s")
  print(f"doodleNet on one image:                           "
        f"{seconds(cnn, images[:1]) * 1e3:.2f} ms")
  print(f"draw one sketch alone:                            "
        f"{seconds(one, xy[0], lens[0]) * 1e3:.2f} ms")
  for label, pairs_of_one in (("culled", num_pairs), ("no culling", None)):
    point_grad = jax.jit(jax.grad(lambda x, l: jnp.sum(sr.soft_rasterize(
        x, l, settings, num_segments=num_segments, num_pairs=pairs_of_one) ** 2)))
    print(f"d drawing / d points, one sketch, {label + ':':15} "
          f"{seconds(point_grad, xy[0], lens[0]) * 1e3:.2f} ms")


if __name__ == "__main__":
  main()
