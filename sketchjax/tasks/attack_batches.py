"""Running a per-sketch attack over many drawings in batches of similar size
(the raster and the vector attacks of the stroke_attack task share it)."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from absl import logging
import numpy as np

from sketchjax.data.records import Drawing


def size_sorted_batches(point_counts: Sequence[int], batch_size: int
                        ) -> Iterator[tuple[int, list[int]]]:
  """(start, indices) of consecutive batches of the drawings sorted by point count,
  so drawings of similar size share a compiled shape; logs progress after each."""
  order = sorted(range(len(point_counts)), key=lambda i: point_counts[i])
  for start in range(0, len(order), batch_size):
    yield start, order[start:start + batch_size]
    logging.info("attacked %d / %d sketches", min(start + batch_size, len(order)), len(order))


def fill_results(results: list, chosen: Sequence[int], drawings: Sequence[Drawing],
                 labels: np.ndarray, scales: Sequence[float], xy: np.ndarray, lens: np.ndarray,
                 out: Mapping[str, Any]) -> None:
  """Puts row `r` of a batch's outputs at results[chosen[r]]: the drawing, its label,
  scale (pixels a canvas unit, 1 in canvas units), padded xy / lens and every output."""
  for row, i in enumerate(chosen):
    results[i] = {"drawing": drawings[i], "label": int(labels[row]),
                  "scale": float(scales[row]), "xy": xy[row], "lens": lens[row],
                  **{name: np.asarray(value[row]) for name, value in out.items()}}
