"""How many IG path points the drawing page's stroke colours need.

The page labels each stroke helps / hurts / noise from SLA (integrated gradients over
stroke opacities) of doodleNet's top-class log-probability, with `assist.ig_steps`
path points. For real QuickDraw drawings, and each of their prefixes (what the page
sees while one draws), compares 8, 16 and 32 points with 128: the share of strokes
given the same label, and the completeness error |sum A - (F(drawing) - F(blank))|
against the mean gap |F(drawing) - F(blank)|.

  python benchmarks/draw_sla_steps.py --drawings=40
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import jax
import numpy as np

from sketchjax.data.formats import folder
from sketchjax.methods import assisted_drawing as ad
from sketchjax.models import doodlenet

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"
REFERENCE = 128


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--drawings", type=int, default=40)
  args = parser.parse_args()
  model, variables, names = doodlenet.load_doodlenet(SHARED / "pretrained" / "doodlenet")
  logits = lambda images: model.apply(variables, images[..., None])[0]
  files = folder.list_category_files(SHARED / "data" / "quickdraw" / "simplified")
  chosen = sorted(files)[::max(1, len(files) // args.drawings)][:args.drawings]
  settings = ad.AssistSettings()
  raster = dataclasses.replace(ad.sr.OFFICIAL, supersample=settings.supersample,
                               edge=1.0 / settings.supersample)
  explain = {steps: jax.jit(lambda xy, lens, steps=steps: ad._explain(
      logits, raster, steps, xy, lens, -1, num_segments=ad._DRAWING_FLOOR[2],
      num_pairs=ad._DRAWING_FLOOR[3])) for steps in (8, 16, 32, REFERENCE)}
  blank = jax.nn.log_softmax(logits(np.zeros((1, 28, 28), np.float32))[0])
  same, errors, gaps = {s: [] for s in explain}, {s: [] for s in explain}, []
  for name in chosen:
    strokes = folder.read_drawings(files[name])[0].sketch.strokes
    for k in range(1, len(strokes) + 1):
      drawing = ad.simplified(strokes[:k], ad.Frame.of(strokes[:k]), settings.rdp_epsilon)
      xy, lens, num_segments, num_pairs = ad._pixel_batch([drawing], raster, ad._DRAWING_FLOOR)
      if (num_segments, num_pairs) != ad._DRAWING_FLOOR[2:]:
        continue  # a rarer shape: skipped, not compiled again
      out = {s: jax.device_get(f(xy[0], lens[0])) for s, f in explain.items()}
      probabilities, target, _ = out[REFERENCE]
      gap = float(np.log(probabilities[target]) - blank[target])
      gaps.append(abs(gap))
      reference = ad.stroke_labels(out[REFERENCE][2][:k], settings.noise_fraction)
      for steps, (_, _, ig) in out.items():
        same[steps] += [a == b for a, b in zip(ad.stroke_labels(ig[:k], settings.noise_fraction),
                                               reference)]
        errors[steps].append(abs(float(ig.sum()) - gap))
  print(f"{len(gaps)} prefixes of {len(chosen)} real drawings; mean |F(x) - F(blank)| = "
        f"{np.mean(gaps):.2f} (log-probability of the top class)")
  for steps in explain:
    print(f"{steps:4d} path points: same label as {REFERENCE} points for "
          f"{np.mean(same[steps]):.1%} of {len(same[steps])} strokes; completeness error "
          f"{np.mean(errors[steps]):.3f}")


if __name__ == "__main__":
  main()
