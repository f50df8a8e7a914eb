"""ZSE-SBIR exact RN scoring of a tile: the per-pair path against the tile scorer, one process.

  python benchmarks/zse_tile_scoring.py                                   # ViT-B/16, 20 x 20
  python benchmarks/zse_tile_scoring.py --variant=zse_small --image_size=64 --tile=20 --repeats=7

Random init. Both score every pair of `--tile` sketches x `--tile` photos from their cached
per-item projections (`zse_ranking.ItemFeatures.flat` rows):
  per pair   `zse_ranking.pair_scorer` on the rows repeated / tiled into tile^2 pairs (what
             `pair_score_tile` did before the tile scorer; `rerank_score_tile` still does);
  tile       `zse_ranking.tile_scorer` (`ZseSbir.pair_logits_tile`: each side's CA attention
             one product a head over the whole tile).
Interleaved per pair / tile / per pair / tile, each jitted and warmed up once; medians of
`--repeats` of wall time and of the process's CPU time (all threads: on a shared machine the
steadier measure of the work), pairs/s, the load average, and the largest logit difference.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.methods import zse_ranking
from sketchjax.models import zse_sbir

_VARIANT = flags.DEFINE_string("variant", "zse_vit_b16", "A zse_sbir model constructor.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side (px).")
_TILE = flags.DEFINE_integer("tile", 20, "Sketches and photos of the tile.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed calls of each scorer a round (median).")


def _timed(fn, args) -> tuple[np.ndarray, float, float]:
  """(output, median wall s, median process CPU s) of `--repeats` calls after a warm-up."""
  jax.block_until_ready(fn(*args))
  walls, cpus = [], []
  for _ in range(_REPEATS.value):
    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args))
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return np.asarray(out), statistics.median(walls), statistics.median(cpus)


def main(argv):
  del argv
  model = getattr(zse_sbir, _VARIANT.value)(image_size=_IMAGE_SIZE.value)
  params = zse_sbir.init_variables(model, jax.random.key(0))["params"]
  tile, size = _TILE.value, model.image_size
  features = {m: zse_ranking.ItemFeatures(model, params, m) for m in ("sketch", "photo")}
  rows = {m: jax.jit(features[m].flat)(params, jax.random.uniform(
      jax.random.key(i), (tile, size, size, 3), minval=-1.0, maxval=1.0))
          for i, m in enumerate(("sketch", "photo"))}
  pairs = zse_ranking.pair_scorer(model, features["sketch"], features["photo"])
  scorers = {
      "per pair": jax.jit(lambda p, q, g: pairs(p, jnp.repeat(q, tile, 0),
                                                jnp.tile(g, (tile, 1))).reshape(tile, tile)),
      "tile": zse_ranking.tile_scorer(model, features["sketch"], features["photo"])}
  print(f"ZSE-SBIR {_VARIANT.value} at {size} px, {tile} x {tile} pairs a call, medians of "
        f"{_REPEATS.value}, load {os.getloadavg()[0]:.2f}")
  outputs = {}
  for name in ("per pair", "tile", "per pair", "tile"):
    outputs[name], wall, cpu = _timed(scorers[name], (params, rows["sketch"], rows["photo"]))
    print(f"  {name:8s} wall {wall:8.3f} s  cpu {cpu:8.3f} s  {tile * tile / wall:9.2f} pairs/s"
          f"  load {os.getloadavg()[0]:.2f}", flush=True)
  print(f"  max |tile - per pair| logit {np.abs(outputs['tile'] - outputs['per pair']).max():.2e}")


if __name__ == "__main__":
  app.run(main)
