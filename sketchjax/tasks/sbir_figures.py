"""The retrieval figure: each query sketch beside its top-ranked photos, hits framed."""

from __future__ import annotations

import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)
import numpy as np  # noqa: E402

HIT, MISS = "#1a9850", "#d73027"


def save_retrieval_figure(path: str | pathlib.Path, queries: Sequence[np.ndarray],
                          query_titles: Sequence[str], results: Sequence[Sequence[np.ndarray]],
                          result_titles: Sequence[Sequence[str]],
                          hits: Sequence[Sequence[bool | None]]) -> None:
  """One row a query: the sketch, then its ranked photos.

  queries: uint8 [H, W, 3] images; results[i]: the top photos of query i in
  rank order; hits[i][j]: True (framed green), False (red) or None (label
  unknown, no frame).
  """
  rows, cols = len(queries), 1 + max((len(r) for r in results), default=0)
  fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
    ax.axis("off")
  for i, (query, title) in enumerate(zip(queries, query_titles)):
    axes[i, 0].imshow(query)
    axes[i, 0].set_title(title, fontsize=7, fontweight="bold")
    for j, (image, name, hit) in enumerate(zip(results[i], result_titles[i], hits[i])):
      ax = axes[i, j + 1]
      ax.axis("on")
      ax.imshow(image)
      ax.set_title(f"{j + 1}. {name}", fontsize=6,
                   color="black" if hit is None else (HIT if hit else MISS))
      for spine in ax.spines.values():
        spine.set_visible(hit is not None)
        spine.set_color(HIT if hit else MISS)
        spine.set_linewidth(3)
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
