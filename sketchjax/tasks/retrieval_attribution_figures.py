"""Figures of the retrieval_attribution task: queries coloured by stroke attribution beside
their top photos, and the early-retrieval curves."""

from __future__ import annotations

import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)
import numpy as np  # noqa: E402

from sketchjax.tasks.sbir_figures import HIT, MISS  # noqa: E402

ORDER_STYLE = {"drawing": ("drawing order", "black", "-"), "random": ("random", "grey", ":"),
               "sla_ig": ("SLA (IG) order, oracle", "#d95f02", "-"),
               "sla_grad_x_input": ("grad x input order, oracle", "#7570b3", "--"),
               "occlusion": ("occlusion order, oracle", "#1b9e77", "--")}


def save_attribution_figure(path: str | pathlib.Path, strokes: Sequence[Sequence[np.ndarray]],
                            attributions: Sequence[np.ndarray], labels: Sequence[str],
                            photos: Sequence[Sequence[np.ndarray]],
                            hits: Sequence[Sequence[bool]], canvas: float) -> None:
  """One row a query: its strokes coloured by attribution (red helps the match with the
  top photo, blue works against it; scale symmetric per query; the number at each
  stroke's start is its drawing position), then its top photos, hits framed green.

  strokes[i]: polylines in pixels of a canvas x canvas image; attributions[i]:
  float[>= len(strokes[i])]; photos[i]: uint8 [H, W, 3] in rank order.
  """
  cols = 1 + max((len(p) for p in photos), default=0)
  fig, axes = plt.subplots(len(strokes), cols, figsize=(1.6 * cols, 1.7 * len(strokes)),
                           squeeze=False)
  cmap = plt.get_cmap("RdBu_r")
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
    ax.axis("off")
  for i, (drawing, values) in enumerate(zip(strokes, attributions)):
    ax = axes[i, 0]
    scale = max(float(np.max(np.abs(values[:len(drawing)]))), 1e-12)
    for k, stroke in enumerate(drawing):
      color = cmap(0.5 + 0.5 * values[k] / scale)
      ax.plot(stroke[:, 0], stroke[:, 1], color=color, linewidth=2, solid_capstyle="round")
      ax.text(stroke[0, 0], stroke[0, 1], str(k + 1), fontsize=5, color="black")
    ax.set_xlim(0, canvas)
    ax.set_ylim(canvas, 0)
    ax.set_aspect("equal")
    ax.set_title(f"{labels[i]} (SLA)", fontsize=7, fontweight="bold")
    for j, (image, hit) in enumerate(zip(photos[i], hits[i])):
      ax = axes[i, j + 1]
      ax.axis("on")
      ax.imshow(image)
      ax.set_title(f"{j + 1}", fontsize=6, color=HIT if hit else MISS)
      for spine in ax.spines.values():
        spine.set_color(HIT if hit else MISS)
        spine.set_linewidth(3)
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def save_early_retrieval(path: str | pathlib.Path, result: dict) -> None:
  """mAP@all and acc@10 against the share of strokes drawn (top) and the number drawn
  (bottom), one line an order; `result` as the task's results.json."""
  axes_of = {"fraction": ("share of the query's strokes drawn", result["early_fractions"]),
             "after_strokes": ("strokes drawn (all, if fewer)", result["early_after_strokes"])}
  fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), squeeze=False)
  for row, (kind, (xlabel, xs)) in enumerate(axes_of.items()):
    for col, (metric, name) in enumerate((("map_all", "mAP@all"), ("acc_at_10", "acc@10"))):
      ax = axes[row, col]
      for order, curves in result["early"].items():
        label, color, style = ORDER_STYLE.get(order, (order, None, "-"))
        ax.plot(xs, [m[metric] for m in curves[kind]], style, color=color, marker="o",
                markersize=3, label=label)
      ax.axhline(result["render"]["pipeline"][metric], color="#999999", linewidth=0.8,
                 label="whole query, pipeline render")
      ax.set_xlabel(xlabel)
      ax.set_ylabel(name)
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f"Early retrieval: {result['queries']} QuickDraw queries x "
               f"{result['gallery']} photos", fontsize=10)
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
