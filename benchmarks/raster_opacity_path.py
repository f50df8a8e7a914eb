"""The target logit of a trained raster CNN along the SLA path: every stroke at opacity alpha.

  python benchmarks/raster_opacity_path.py --workdir=workdirs/qd14_raster \
      --data_dir=workdirs/qd14_real --sketches=20

Prints the mean (over the first drawing of each of `--sketches` categories) of
the predicted class's logit at alpha in [0, 1]: where along the path from the
blank canvas the score changes, which is what integrated gradients with m
midpoints (1/2m, 3/2m, ...) can see.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.data.formats import folder
from sketchjax.models.raster_classifier import RasterClassifier
from sketchjax.tasks import classify
from sketchjax.tasks.attribution import raster_cnn_on_soft_images

ALPHAS = (0.0, 1e-4, 1e-3, 1e-2, 1 / 64, 0.05, 0.1, 0.3, 0.6, 1.0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a trained raster_quickdraw workdir")
  parser.add_argument("--data_dir", required=True, help="folder of simplified ndjson files")
  parser.add_argument("--sketches", type=int, default=20)
  parser.add_argument("--supersample", type=int, default=4)
  args = parser.parse_args()
  model, params, _, _ = classify.load_trained(args.workdir)
  if not isinstance(model, RasterClassifier):
    raise SystemExit(f"{args.workdir} holds a {type(model).__name__}, not a raster CNN")
  images_logits, settings, to_pixels = raster_cnn_on_soft_images(model, params,
                                                                 args.supersample)
  logits = jax.jit(images_logits)
  files = list(folder.list_category_files(args.data_dir).values())[:args.sketches]
  alphas = jnp.asarray(ALPHAS)
  curves = []
  for path in files:
    pixels = to_pixels(folder.read_drawings(path)[0].sketch.strokes)
    xy, lens, num_segments = sr.pad_batch([pixels])
    image = sr.soft_rasterize(xy[0], lens[0], settings, num_segments=num_segments,
                              num_pairs=sr.tile_pair_budget(xy, lens, settings))
    path_logits = logits(alphas[:, None, None] * image[None])
    curves.append(np.asarray(path_logits[:, int(jnp.argmax(path_logits[-1]))]))
  mean = np.mean(curves, axis=0)
  print(f"predicted-class logit along alpha (mean of {len(curves)} drawings; "
        f"F(1) - F(0) = {mean[-1] - mean[0]:.2f}):")
  for alpha, value in zip(ALPHAS, mean):
    share = (value - mean[0]) / (mean[-1] - mean[0])
    print(f"  alpha {alpha:7.4f}: {value:6.2f}  ({share:6.1%} of the change)")


if __name__ == "__main__":
  main()
