"""Completeness of integrated gradients (SLA) against the number of path points, for doodleNet.

IG's attributions sum to F(sketch) - F(blank) exactly in the limit; the
midpoint rule with m points misses it by an error that shrinks with m. This
prints, for real QuickDraw test drawings rendered by the soft rasteriser with
the official settings, the mean |sum of SLA - (F(sketch) - F(blank))| (F =
the predicted class's logit) for several m, next to the mean gap itself.

  python benchmarks/ig_convergence.py --sketches=40 --steps=16,32,64,128,256,512
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.data import splits
from sketchjax.data.formats import folder
from sketchjax.methods import attribution
from sketchjax.models import doodlenet

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


def test_drawings(count: int):
  """The first key_id-test drawing of each of the first `count` categories."""
  files = folder.list_category_files(SHARED / "data" / "quickdraw" / "simplified")
  return [splits.split_by_key_id(folder.read_drawings(path), 0.25)[1][0]
          for path in list(files.values())[:count]]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sketches", type=int, default=40)
  parser.add_argument("--steps", default="16,32,64,128,256,512")
  args = parser.parse_args()
  model, variables, _ = doodlenet.load_doodlenet(SHARED / "pretrained" / "doodlenet")
  settings = sr.OFFICIAL
  drawings = test_drawings(args.sketches)
  xy, lens, num_segments = sr.pad_batch([sr.official_pixels(d.sketch.strokes) for d in drawings])
  num_pairs = sr.tile_pair_budget(xy, lens, settings)
  logits = lambda image: model.apply(variables, image[None, ..., None])[0][0]
  coverage_of = lambda x, l: sr.draw_strokes(x, l, settings, num_segments=num_segments,
                                             num_pairs=num_pairs)

  @jax.jit
  def gap(x, l):
    coverage = coverage_of(x, l)
    full = logits(sr.composite(coverage))
    target = jnp.argmax(full)
    return full[target] - logits(sr.composite(coverage, jnp.zeros(l.shape[0])))[target], target

  gaps, targets = jax.vmap(gap)(xy, lens)
  print(f"{len(drawings)} sketches, mean |F(sketch) - F(blank)| = "
        f"{float(jnp.abs(gaps).mean()):.3f} logits")
  print(f"{'steps':>6} {'mean |sum - gap|':>17} {'relative':>9} {'max':>8} {'seconds':>8}")
  for steps in map(int, args.steps.split(",")):
    @jax.jit
    def sla_sum(x, l, t, steps=steps):
      score = attribution.stroke_score(lambda im: logits(im)[t], coverage_of(x, l))
      ones = (l > 0).astype(jnp.float32)
      return attribution.integrated_gradients(score, ones, jnp.zeros_like(ones), steps=steps,
                                              chunk=32).sum()

    start = time.perf_counter()
    sums = np.array([float(sla_sum(xy[i], lens[i], targets[i])) for i in range(len(drawings))])
    seconds = time.perf_counter() - start
    errors = np.abs(sums - np.asarray(gaps))
    print(f"{steps:6d} {errors.mean():17.3f} {errors.mean() / float(jnp.abs(gaps).mean()):8.1%} "
          f"{errors.max():8.3f} {seconds:8.1f}", flush=True)


if __name__ == "__main__":
  main()
