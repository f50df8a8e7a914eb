"""The linear probe of benchmarks/dfsbir_linear_probe.py: its fitting function on toy data."""

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import dfsbir_linear_probe as probe  # noqa: E402


def _clusters(rng, centres, per_class, noise):
  x = np.concatenate([c + noise * rng.standard_normal((per_class, centres.shape[1]))
                      for c in centres])
  return x.astype(np.float32), np.repeat(np.arange(len(centres)), per_class).astype(np.int32)


def test_separable_toy_data_is_classified_exactly():
  rng = np.random.default_rng(0)
  centres = 4.0 * np.eye(5, 16)
  x, y = _clusters(rng, centres, 20, 0.3)
  xt, yt = _clusters(rng, centres, 10, 0.3)
  scale = probe.standardiser(x)
  predict = probe.fit_probe(scale(x), y, 5)
  assert np.mean(predict(scale(x)) == y) == 1.0
  assert np.mean(predict(scale(xt)) == yt) == 1.0


def test_cross_modal_probe_aligned_and_shuffled():
  """Two 'modalities' sharing class centres: every probe is exact; with the second
  modality's classes permuted, the within-modality probes stay exact and the
  cross-modal ones fall to chance or below."""
  rng = np.random.default_rng(1)
  centres = 4.0 * np.eye(4, 8)
  data = {s: {m: _clusters(rng, centres, n, 0.3) for m in ("photo", "sketch")}
          for s, n in (("train", 15), ("test", 10))}
  acc = probe.probe_accuracies(data["train"], data["test"], 4)
  assert all(v == 1.0 for v in acc.values()), acc
  perm = np.array([1, 2, 3, 0])
  for s in ("train", "test"):
    x, y = data[s]["sketch"]
    data[s]["sketch"] = (x, perm[y])
  acc = probe.probe_accuracies(data["train"], data["test"], 4)
  assert acc["photo->photo"] == acc["sketch->sketch"] == 1.0, acc
  assert acc["photo->sketch"] == acc["sketch->photo"] == 0.0, acc
  assert acc["photo->photo_ncm"] == acc["sketch->sketch_ncm"] == 1.0, acc
  assert acc["photo->sketch_ncm"] == acc["sketch->photo_trainside_ncm"] == 0.0, acc
