"""Matplotlib drawings of sketches (figures for people, not for models)."""

from __future__ import annotations

import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from sketchjax.sketch.sketch import Sketch  # noqa: E402


def draw_sketch(ax, sketch: Sketch, *, linewidth: float = 1.5) -> None:
  """Draws the strokes on `ax`, y down as on a canvas, a colour per stroke in order."""
  colors = plt.cm.rainbow(np.linspace(0, 1, max(sketch.num_strokes, 1)))
  for stroke, color in zip(sketch.strokes, colors):
    if len(stroke) == 1:
      ax.plot(stroke[:, 0], stroke[:, 1], "o", color=color, markersize=2)
    else:
      ax.plot(stroke[:, 0], stroke[:, 1], color=color, linewidth=linewidth,
              solid_capstyle="round")
  ax.set_aspect("equal")
  ax.invert_yaxis()
  ax.set_xticks([])
  ax.set_yticks([])


def save_sketch_grid(sketches: Sequence[Sketch], titles: Sequence[str],
                     path: str | pathlib.Path, *, columns: int = 8,
                     title_colors: Sequence[str] | None = None) -> None:
  """A grid of sketches with a title each, saved as an image at `path`."""
  rows = max(1, -(-len(sketches) // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 2.0 * rows),
                           squeeze=False)
  for i, ax in enumerate(axes.flat):
    if i >= len(sketches):
      ax.axis("off")
      continue
    draw_sketch(ax, sketches[i])
    color = title_colors[i] if title_colors else "black"
    ax.set_title(titles[i], fontsize=7, color=color)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
