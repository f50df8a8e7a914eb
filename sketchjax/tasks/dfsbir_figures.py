"""Figures of the dfsbir task: reconstructed pairs per class, mAP@all by step."""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)
import numpy as np  # noqa: E402


def _as_uint8(image: np.ndarray) -> np.ndarray:
  return np.clip((image + 1) * 127.5, 0, 255).astype(np.uint8)


def save_reconstructions(path: pathlib.Path, photos: np.ndarray, sketches: np.ndarray,
                         photo_labels: np.ndarray, sketch_labels: np.ndarray,
                         classes: Sequence[str], per_class: int = 2) -> None:
  """The paper's qualitative figure: for each class, the first `per_class` noise
  vectors the photo teacher puts in it, photo (top) and sketch (bottom) from the
  same noise, titled with both teachers' classes. photos, sketches [N, S, S, 3]
  in [-1, 1]; labels [N] int."""
  columns = []
  for c in range(len(classes)):
    columns += [int(i) for i in np.flatnonzero(photo_labels == c)[:per_class]]
  if not columns:
    columns = [0]
  fig, axes = plt.subplots(2, len(columns), figsize=(max(1.3 * len(columns), 6.0), 3.0),
                           squeeze=False)
  for j, i in enumerate(columns):
    for row, (images, labels) in enumerate(((photos, photo_labels), (sketches, sketch_labels))):
      ax = axes[row, j]
      ax.imshow(_as_uint8(images[i]))
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(classes[int(labels[i])], fontsize=7,
                   color="black" if photo_labels[i] == sketch_labels[i] else "#d73027")
  axes[0, 0].set_ylabel("photo", fontsize=8)
  axes[1, 0].set_ylabel("sketch", fontsize=8)
  fig.suptitle("estimator pairs from shared noise (title: each teacher's class; red: they differ)",
               fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_map_by_step(path: pathlib.Path, metrics_jsonl: pathlib.Path) -> None:
  """mAP@all (and P@200) of the eval rows of a run against the step (period)."""
  rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
  evals = sorted((r for r in rows if r.get("split") == "eval" and "map_all" in r),
                 key=lambda r: r["step"])
  fig, ax = plt.subplots(figsize=(4.5, 3.0))
  steps = [r["step"] for r in evals]
  ax.plot(steps, [r["map_all"] for r in evals], "o-", label="mAP@all")
  if evals and "prec_at_200" in evals[0]:
    ax.plot(steps, [r["prec_at_200"] for r in evals], "s--", label="P@200")
  ax.set_xlabel("period (estimator steps + 1 student step)")
  ax.set_ylabel("on the real test set")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
