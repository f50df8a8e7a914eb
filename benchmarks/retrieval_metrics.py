"""Streaming retrieval metrics vs a whole-matrix numpy argsort, and a 100k gallery.

  python benchmarks/retrieval_metrics.py

Sketch queries and photos are random unit vectors (`--dim`-d, `--classes`
classes, seeded); each query's fine-grained match is a random photo of its
class. Side by side, every metric of sketchjax/methods/retrieval_metrics.py:
  streaming  tiles of `--tile` queries, the gallery split over `--devices`
             simulated CPU devices; timed after a warm-up on one tile (which
             compiles every shape);
  numpy      scores = q @ g.T, np.argsort(-scores, kind="stable", axis=1),
             then the metrics vectorised over the whole matrix (float64);
for `--queries` x `--photos`, with their seconds, ratio, peak memory and the
largest difference between their numbers; then the streaming one alone on
`--big_photos` photos. Each run is its own subprocess, so its peak memory
(ru_maxrss) is its own; the data is generated before the clock starts.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

_QUERIES = flags.DEFINE_integer("queries", 10_000, "Sketch queries.")
_PHOTOS = flags.DEFINE_integer("photos", 10_000, "Photos of the side-by-side gallery.")
_BIG_PHOTOS = flags.DEFINE_integer("big_photos", 100_000, "Photos of the streaming-only run "
                                   "(0 = skip).")
_DIM = flags.DEFINE_integer("dim", 512, "Embedding size.")
_CLASSES = flags.DEFINE_integer("classes", 100, "Classes.")
_TILE = flags.DEFINE_integer("tile", 256, "Queries a tile.")
_DEVICES = flags.DEFINE_integer("devices", os.cpu_count(), "Simulated CPU devices of the "
                                "streaming run (the gallery is split over them).")
_ONLY = flags.DEFINE_string("only", "", "Run 'streaming:photos' or 'numpy:photos' in this "
                            "process and print its JSON (used by the driver).")


def _data(num_photos: int):
  import numpy as np
  rng = np.random.default_rng(0)
  unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(
      rng.standard_normal((n, _DIM.value), np.float32))
  queries, photos = unit(_QUERIES.value), unit(num_photos)
  query_labels = rng.integers(0, _CLASSES.value, _QUERIES.value)
  photo_labels = rng.integers(0, _CLASSES.value, num_photos)
  by_class = [np.flatnonzero(photo_labels == c) for c in range(_CLASSES.value)]
  match = np.array([rng.choice(by_class[c]) for c in query_labels])
  return queries, query_labels, photos, photo_labels, match


def streaming(num_photos: int) -> dict:
  from sketchjax.methods import retrieval_metrics as rm
  queries, query_labels, photos, photo_labels, match = _data(num_photos)
  run = lambda n: rm.retrieval_metrics(queries[:n], query_labels[:n], photos, photo_labels,
                                       query_match=match[:n], tile=_TILE.value)
  run(_TILE.value)  # compiles every shape
  start = time.perf_counter()
  metrics = run(len(queries))
  return {"seconds": time.perf_counter() - start, "metrics": metrics}


def whole_matrix_numpy(num_photos: int) -> dict:
  """Spec 4's formulas vectorised over the full [Nq, Ng] matrix."""
  import numpy as np
  queries, query_labels, photos, photo_labels, match = _data(num_photos)
  start = time.perf_counter()
  scores = queries @ photos.T
  order = np.argsort(-scores, kind="stable", axis=1)
  del scores
  rel = photo_labels[order] == query_labels[:, None]
  match_rank = np.argmax(order == match[:, None], axis=1) + 1
  del order
  r = rel.sum(axis=1)
  hits = np.cumsum(rel, axis=1)
  precision = hits / np.arange(1, num_photos + 1)
  envelope = np.flip(np.maximum.accumulate(np.flip(precision, 1), axis=1), 1)
  safe = lambda d: np.maximum(d, 1)
  out = {"map_all": (rel * precision).sum(1) / safe(r),
         "map_all_voc": (rel * envelope).sum(1) / safe(r)}
  k = 200
  top_envelope = np.flip(np.maximum.accumulate(np.flip(precision[:, :k], 1), axis=1), 1)
  out["map_at_200"] = (rel[:, :k] * precision[:, :k]).sum(1) / safe(np.minimum(r, k))
  out["map_at_200_voc"] = (rel[:, :k] * top_envelope).sum(1) / safe(np.minimum(r, k))
  for k in (100, 200):
    out[f"prec_at_{k}"] = hits[:, k - 1] / k
    k_min = np.minimum(r, k)
    out[f"prec_at_{k}_min_r"] = hits[np.arange(len(r)), safe(k_min) - 1] / safe(k_min)
  first_ten = rel & (hits <= 10)  # the DF-SBIR code's AP, stopped after 10 hits
  out["dfsbir_map_10hits"] = (first_ten * precision).sum(1) / safe(first_ten.sum(1))
  out["dfsbir_precision_top100"] = ((first_ten[:, :100] * precision[:, :100]).sum(1)
                                    / safe(first_ten[:, :100].sum(1)))
  counted = r > 0
  metrics = {name: float(v[counted].mean()) for name, v in out.items()}
  metrics.update(acc_at_1=float(np.mean(match_rank <= 1)),
                 acc_at_10=float(np.mean(match_rank <= 10)),
                 num_queries=float(len(r)), skipped_queries=float(np.sum(~counted)))
  return {"seconds": time.perf_counter() - start, "metrics": metrics}


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0]} x {len(names)}"
  except (OSError, IndexError):
    return platform.processor() or "unknown CPU"


def _subprocess(spec: str) -> dict:
  env = dict(os.environ)
  if spec.startswith("streaming"):
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={_DEVICES.value}")
  passed = [f"--{f.name}={f.value}" for f in (_QUERIES, _DIM, _CLASSES, _TILE)]
  proc = subprocess.run([sys.executable, __file__, f"--only={spec}", *passed], env=env,
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"{spec} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if _ONLY.value:
    kind, photos = _ONLY.value.split(":")
    result = (streaming if kind == "streaming" else whole_matrix_numpy)(int(photos))
    result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))
    return
  import jax
  print(f"CPU: {cpu_model()}; JAX {jax.__version__}; streaming on {_DEVICES.value} simulated "
        f"devices, tiles of {_TILE.value} queries; {_DIM.value}-d random unit vectors, "
        f"{_CLASSES.value} classes", flush=True)
  size = f"{_QUERIES.value} x {_PHOTOS.value}"
  fast = _subprocess(f"streaming:{_PHOTOS.value}")
  slow = _subprocess(f"numpy:{_PHOTOS.value}")
  print(f"\n{size:>18} | {'seconds':>8} {'peak GiB':>8}")
  for name, r in (("streaming (JAX)", fast), ("whole-matrix numpy", slow)):
    print(f"{name:>18} | {r['seconds']:8.2f} {r['peak_gib']:8.2f}")
  print(f"numpy / streaming: {slow['seconds'] / fast['seconds']:.1f}x time, "
        f"{slow['peak_gib'] / fast['peak_gib']:.1f}x memory")
  print(f"\n{'metric':>24} | {'streaming':>10} {'numpy':>10} {'|diff|':>9}")
  for name, value in fast["metrics"].items():
    other = slow["metrics"][name]
    print(f"{name:>24} | {value:10.6f} {other:10.6f} {abs(value - other):9.2e}")
  if _BIG_PHOTOS.value:
    big = _subprocess(f"streaming:{_BIG_PHOTOS.value}")
    print(f"\nstreaming {_QUERIES.value} x {_BIG_PHOTOS.value}: {big['seconds']:.1f} s, peak "
          f"{big['peak_gib']:.2f} GiB; mAP@all {big['metrics']['map_all']:.6f}, "
          f"Prec@200 {big['metrics']['prec_at_200']:.6f}")


if __name__ == "__main__":
  app.run(main)
