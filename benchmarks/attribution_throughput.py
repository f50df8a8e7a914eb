"""Per-stroke attribution throughput: batched (vmap over strokes and sketches) vs a Python loop.

The same attribution, occlusion (score drop when one stroke is removed), two ways:
  loop     for each sketch, for each stroke: one jitted call that draws the
           sketch without that stroke (doodleNet: soft rasteriser) and scores
           it (fixed shapes, so it compiles once), the way a per-stroke
           explanation is usually written; for doodleNet also at each sketch's
           own power-of-two shapes (`own`: less padding, a few compiles);
  batched  one jitted call per batch of sketches: the deletions of every
           real stroke of the batch packed into one forward pass
           (`packed_occlusion`; doodleNet: each stroke drawn once, deleting
           a stroke = compositing the others, `hide_strokes`)
           (sketchjax.methods.attribution).
doodleNet twice: drawing each segment only on the tiles it reaches (the
rasteriser's default) and on every tile (the cost without culling).
Also times the full batched suite of each model (IG, gradient x input,
occlusion; and P-SLA and point gradients for doodleNet). Real QuickDraw
drawings; SketchXAINet-Tiny (masked, bucketed slots) with random weights
(the cost does not depend on the weights), doodleNet with its own.

  python benchmarks/attribution_throughput.py --sketches=32
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.data import tokenize
from sketchjax.data.formats import folder
from sketchjax.methods import attribution
from sketchjax.models import doodlenet
from sketchjax.models.sketchxainet import tiny
from sketchjax.sketch import normalize

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


def _timed(fn, repeats: int) -> float:
  """Median seconds of fn() (fn blocks on its result); one warm-up call first."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _drawings(count: int):
  files = folder.list_category_files(SHARED / "data" / "quickdraw" / "simplified")
  drawings = []
  for path in list(files.values())[:count]:
    drawings.append(folder.read_drawings(path)[0])
  return drawings


def bench_doodlenet(drawings, repeats: int, steps: int, cull: bool) -> dict:
  """cull: draw each segment only on the tiles it reaches (the default; the
  batched call packs the pairs of the whole batch, `sr.draw_batch`), else on
  every tile (every segment at every sample, the cost without culling)."""
  model, variables, _ = doodlenet.load_doodlenet(SHARED / "pretrained" / "doodlenet")
  settings = sr.OFFICIAL
  pixels = [sr.official_pixels(d.sketch.strokes) for d in drawings]
  xy, lens, num_segments = sr.pad_batch(pixels)
  num_pairs = sr.tile_pair_budget(xy, lens, settings) if cull else None
  logits = lambda image: model.apply(variables, image[None, ..., None])[0][0]
  coverage_of = lambda x, l: sr.draw_strokes(x, l, settings, num_segments=num_segments,
                                             num_pairs=num_pairs)
  if cull:
    batch_pairs = sr.tile_pair_budget(xy, lens, settings, batch_total=True)
    draw_all = lambda xy, lens: sr.draw_batch(xy, lens, settings, num_segments=num_segments,
                                              num_pairs=batch_pairs)
  else:
    draw_all = jax.vmap(coverage_of)

  targets = jax.jit(jax.vmap(lambda x, l: jnp.argmax(logits(sr.composite(coverage_of(x, l))))))(
      xy, lens)

  pairs = jnp.asarray(attribution.deletion_pairs(lens))
  drawn_logits = lambda drawn: model.apply(
      variables, jax.vmap(sr.composite)(drawn["coverage"])[..., None])[0]

  @jax.jit
  def batched(xy, lens, targets, pairs):
    # every stroke drawn once; the deletions of all real strokes scored in one pass
    drawn = {"coverage": draw_all(xy, lens)}
    return attribution.packed_occlusion(drawn_logits, drawn, pairs, targets,
                                        num_slots=lens.shape[1], delete=attribution.hide_strokes)

  @functools.partial(jax.jit, static_argnames=("segments", "pairs"))
  def score_one(x, l, keep, t, segments, pairs):
    return logits(sr.soft_rasterize(x, l, settings, stroke_opacity=keep, num_segments=segments,
                                    num_pairs=pairs))[t]

  # the loop at the batch's shapes (compiles once), or at each sketch's own
  # power-of-two shapes (a few compiles, done in the untimed warm-up call)
  fixed = [(xy[b], lens[b], num_segments, num_pairs) for b in range(len(drawings))]
  own = []
  for p in pixels:
    x, l, n = sr.pad_batch([p])
    own.append((x[0], l[0], n, sr.tile_pair_budget(x, l, settings) if cull else None))

  def loop(sketches):
    out = []
    for b, (x, l, n, m) in enumerate(sketches):
      keep = np.asarray(l > 0, np.float32)
      full = score_one(x, l, keep, targets[b], segments=n, pairs=m)
      for k in range(int((l > 0).sum())):
        without = keep.copy()
        without[k] = 0.0
        out.append(float(full - score_one(x, l, without, targets[b], segments=n, pairs=m)))
    return out

  # The full suite holds every segment's ink at every IG point: a few sketches and
  # 8 path points at a time (as the attribution task) keep it within memory.
  full_suite = jax.jit(lambda xy, lens: jax.lax.map(
      lambda args: attribution.raster_attributions(
          lambda im: logits(im).max(), *args, settings, num_segments=num_segments,
          num_pairs=num_pairs, steps=steps, chunk=8), (xy, lens), batch_size=4))
  n = len(drawings)
  t_batched = _timed(lambda: jax.block_until_ready(batched(xy, lens, targets, pairs)), repeats)
  t_loop = _timed(lambda: loop(fixed), repeats)
  t_loop_own = _timed(lambda: loop(own), repeats)
  t_suite = _timed(lambda: jax.block_until_ready(full_suite(xy, lens)), repeats)
  return {"model": "doodleNet" + ("" if cull else " (no culling)"), "sketches": n,
          "strokes": int((lens > 0).sum()), "pairs_a_sketch": num_pairs,
          "occlusion_loop_sketches_per_s": n / t_loop,
          "occlusion_loop_own_shapes_sketches_per_s": n / t_loop_own,
          "occlusion_batched_sketches_per_s": n / t_batched,
          "speedup": t_loop / t_batched,
          "speedup_vs_own_shapes": t_loop_own / t_batched,
          f"full_suite_ig{steps}_sketches_per_s": n / t_suite}


def bench_sketchxainet(drawings, repeats: int, steps: int) -> dict:
  model = tiny(345, dropout=0.0, attention_dropout=0.0, mask_padding=True)
  config = tokenize.TokenizerConfig(stroke_buckets=(16, 32, 64, 128, 196))
  sketches = [normalize.normalize_sketchxai(d.sketch) for d in drawings]
  batch = tokenize.tokenize_batch(sketches, [0] * len(sketches), config)
  batch = {k: jnp.asarray(batch[k]) for k in ("points", "stroke_len", "loc")}
  params = model.init(jax.random.key(0), batch, train=False)["params"]
  batch_logits = lambda b: model.apply({"params": params}, b, train=False, logits_only=True)[0]
  logits = lambda s: batch_logits(jax.tree.map(lambda x: x[None], s))[0]
  pairs = jnp.asarray(attribution.deletion_pairs(np.asarray(batch["stroke_len"])))

  @jax.jit
  def batched(batch, pairs):  # every real stroke's deletion of the batch in one pass
    targets = jnp.argmax(batch_logits(batch), -1)
    return attribution.packed_occlusion(batch_logits, batch, pairs, targets,
                                        num_slots=batch["loc"].shape[1])

  score_one = jax.jit(lambda s, keep: logits(attribution.delete_strokes(s, keep)))

  def loop():
    out = []
    for b in range(len(drawings)):
      s = jax.tree.map(lambda x: x[b], batch)
      keep = np.asarray(s["stroke_len"] > 0, np.float32)
      full = score_one(s, keep)
      target = int(jnp.argmax(full))
      for k in range(int(keep.sum())):
        without = keep.copy()
        without[k] = 0.0
        out.append(float(full[target] - score_one(s, without)[target]))
    return out

  @jax.jit
  def full_suite(batch, pairs):
    gates = jax.vmap(lambda s: attribution.vector_attributions(
        model, params, s, lambda l: l.max(), steps=steps))(batch)
    return gates, batched(batch, pairs)

  n = len(drawings)
  t_batched = _timed(lambda: jax.block_until_ready(batched(batch, pairs)), repeats)
  t_loop = _timed(loop, repeats)
  t_suite = _timed(lambda: jax.block_until_ready(full_suite(batch, pairs)), repeats)
  return {"model": "SketchXAINet-Tiny (masked, bucketed)", "sketches": n,
          "slots": int(batch["stroke_len"].shape[1]),
          "strokes": int((batch["stroke_len"] > 0).sum()),
          "occlusion_loop_sketches_per_s": n / t_loop,
          "occlusion_batched_sketches_per_s": n / t_batched,
          "speedup": t_loop / t_batched,
          f"full_suite_ig{steps}_sketches_per_s": n / t_suite}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sketches", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--steps", type=int, default=32, help="IG steps of the full suite")
  args = parser.parse_args()
  drawings = _drawings(args.sketches)
  print(f"{jax.devices()[0].platform}: {len(jax.devices())} device(s)")
  results = []
  benches = (functools.partial(bench_doodlenet, cull=True),
             functools.partial(bench_doodlenet, cull=False), bench_sketchxainet)
  for bench in benches:
    results.append(bench(drawings, args.repeats, args.steps))
    print(json.dumps(results[-1]), flush=True)
  print(f"\nocclusion over {args.sketches} real drawings, sketches/s (goal for doodleNet: "
        "batched >= 10x the loop)")
  print("loop: one jitted call a stroke at the batch's shapes; own: at each sketch's own shapes")
  print(f"{'model':38} | {'loop':>8} {'own':>8} {'batched':>8} {'batched/loop':>12} "
        f"{'batched/own':>11} | full suite (IG {args.steps})")
  for r in results:
    own = r.get("occlusion_loop_own_shapes_sketches_per_s")
    own_text = "-" if own is None else f"{own:.2f}"
    ratio_text = "-" if own is None else f"{r['speedup_vs_own_shapes']:.1f}x"
    print(f"{r['model']:38} | {r['occlusion_loop_sketches_per_s']:8.2f} {own_text:>8} "
          f"{r['occlusion_batched_sketches_per_s']:8.2f} {r['speedup']:11.1f}x "
          f"{ratio_text:>11} | {r[f'full_suite_ig{args.steps}_sketches_per_s']:.2f}")


if __name__ == "__main__":
  main()
