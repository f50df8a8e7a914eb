"""Figures of ZSE-SBIR's explanations (`methods/zse_explain.py`): token correspondences drawn as
lines between sketch and photo cells (the paper's figure, for hits and misses), sketch-to-photo
synthesis by patch replacement (sketch | synthesis | photo), and a retrieval explained (a query
and its top photos, each with its correspondences).

Images are the model's inputs mapped to [0, 1] (float [S, S, 3]), so cells line up with the
token grid; coordinates are (x, y) pixels of that S x S image.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)
import numpy as np  # noqa: E402

from sketchjax.methods import zse_explain  # noqa: E402
from sketchjax.tasks.sbir_figures import HIT, MISS  # noqa: E402

GAP = 0.08  # gap between the sketch and the photo, in image widths
CA_COLOR, REVERSE_COLOR, KERNEL_COLOR = "#ff7f00", "#1f78b4", "#6a3d9a"


@dataclasses.dataclass
class Lines:
  """Segments from points of the left image to points of the right one: start, end
  float[N, 2] (x, y) pixels, weight float[N] (drawn width and opacity scale with it);
  uniform: the weight of uniform attention, 1 / keys (None: not attention)."""

  start: np.ndarray
  end: np.ndarray
  weight: np.ndarray
  uniform: float | None = None


@dataclasses.dataclass
class PairView:
  """One explained pair: sketch and photo float [S, S, 3] in [0, 1]; `ca` the sketch tokens'
  strongest CA matches on the photo, `ca_reverse` the photo tokens' on the sketch (start on
  the photo), `kernel_lines` the strongest kernel pairs (None where anchors are not image
  regions, then `kernel` float[A, A'] is shown as a matrix); title; hit (None: unknown)."""

  sketch: np.ndarray
  photo: np.ndarray
  ca: Lines
  ca_reverse: Lines
  kernel: np.ndarray
  kernel_lines: Lines | None
  title: str
  hit: bool | None = None


def strongest(explanation: dict, i: int, n: int, tg: zse_explain.TokenGrid
              ) -> tuple[Lines, Lines, Lines | None]:
  """Pair i of an `explainer` output (numpy arrays) -> its n strongest CA matches each way
  (by weight; ties: the lower token row) and the kernel's n strongest anchor pairs (None
  where the anchors are not image regions), as Lines between cell centres."""

  def xy(index: np.ndarray) -> np.ndarray:
    return np.asarray(zse_explain.cell_centres(np.asarray(index), tg.grid, tg.cell))

  def ca(side: str, other: str) -> Lines:
    weight = explanation[f"ca_{side}_weight"][i]
    order = np.argsort(-weight, kind="stable")[:n]
    keys = 1 + len(explanation[f"ca_{other}_query"][i])  # the other's patch tokens and [Ret]
    return Lines(xy(explanation[f"ca_{side}_query"][i][order]),
                 xy(explanation[f"ca_{side}_key"][i][order]), weight[order], 1 / keys)

  kernel = None
  if tg.anchors_spatial:
    s, p = explanation["kernel_sketch"][i][:n], explanation["kernel_photo"][i][:n]
    kernel = Lines(explanation["sketch_anchor_xy"][i][s], explanation["photo_anchor_xy"][i][p],
                   explanation["kernel_value"][i][:n])
  return ca("sketch", "photo"), ca("photo", "sketch"), kernel


def _side_by_side(ax, left: np.ndarray, right: np.ndarray) -> float:
  """Draws left | right on ax; returns the x offset of the right image."""
  size = left.shape[1]
  offset = size * (1 + GAP)
  ax.imshow(left, extent=(0, size, size, 0))
  ax.imshow(right, extent=(offset, offset + size, size, 0))
  for x0 in (0, offset):
    ax.add_patch(plt.Rectangle((x0, 0), size, size, fill=False, ec="0.3", lw=0.6))
  ax.set_xlim(0, offset + size)
  ax.set_ylim(size, 0)
  ax.set_xticks([])
  ax.set_yticks([])
  for spine in ax.spines.values():
    spine.set_visible(False)
  return offset


def _grid_lines(ax, size: float, grid: int, offset: float) -> None:
  for x0 in (0.0, offset):
    for k in range(1, grid):
      ax.plot([x0 + k * size / grid] * 2, [0, size], color="0.6", lw=0.3)
      ax.plot([x0, x0 + size], [k * size / grid] * 2, color="0.6", lw=0.3)


def _draw_lines(ax, lines: Lines, offset: float, color: str, reverse: bool = False) -> None:
  """Segments from lines.start (left image; the right one if reverse) to lines.end."""
  if not len(lines.weight):
    return
  top = max(float(np.max(np.abs(lines.weight))), 1e-12)
  for start, end, w in zip(lines.start, lines.end, lines.weight):
    (x0, y0), (x1, y1) = start, end
    if reverse:
      x0 += offset
    else:
      x1 += offset
    strength = abs(float(w)) / top
    ax.plot([x0, x1], [y0, y1], color=color, lw=0.6 + 1.8 * strength,
            alpha=0.35 + 0.65 * strength)
    ax.plot([x0, x1], [y0, y1], "o", color=color, ms=2.5)


def _frame(ax, hit: bool | None) -> None:
  if hit is None:
    return
  for spine in ax.spines.values():
    spine.set_visible(True)
    spine.set_color(HIT if hit else MISS)
    spine.set_linewidth(2.5)


def _pair_panel(ax, view: PairView, grid: int, what: str) -> None:
  """One panel of a pair: what = "ca" (sketch -> photo), "reverse" (photo -> sketch) or
  "kernel" (lines, or the matrix when anchors are not regions)."""
  if what == "kernel" and view.kernel_lines is None:
    image = ax.imshow(view.kernel, cmap="viridis")
    ax.set_xlabel("photo anchor", fontsize=6)
    ax.set_ylabel("sketch anchor", fontsize=6)
    ax.set_xticks(range(view.kernel.shape[1]))
    ax.set_yticks(range(view.kernel.shape[0]))
    ax.tick_params(labelsize=5)
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=5)
    ax.set_title("kernel matrix (anchors mix all tokens:\nthe code's view reshape)",
                 fontsize=6)
    return
  offset = _side_by_side(ax, view.sketch, view.photo)
  _grid_lines(ax, view.sketch.shape[0], grid, offset)
  lines, color, reverse, title = {
      "ca": (view.ca, CA_COLOR, False, "CA: sketch token -> photo token"),
      "reverse": (view.ca_reverse, REVERSE_COLOR, True, "CA: photo token -> sketch token"),
      "kernel": (view.kernel_lines, KERNEL_COLOR, False, "kernel: strongest anchor pairs")}[what]
  _draw_lines(ax, lines, offset, color, reverse)
  if lines.uniform is not None and len(lines.weight):
    title += f"\nhead-mean weight: top {lines.weight[0]:.3f}, uniform {lines.uniform:.3f}"
  ax.set_title(title, fontsize=6)
  _frame(ax, view.hit)


def save_correspondence_figure(path: str | pathlib.Path, views: Sequence[PairView],
                               grid: int) -> None:
  """The paper's correspondence figure: one row a pair (e.g. a hit and a miss), panels CA
  sketch -> photo, CA photo -> sketch, kernel; the row's title on the left."""
  fig, axes = plt.subplots(len(views), 3, figsize=(10.5, 2.3 * len(views)), squeeze=False)
  for row, view in zip(axes, views):
    for ax, what in zip(row, ("ca", "reverse", "kernel")):
      _pair_panel(ax, view, grid, what)
    row[0].set_ylabel(view.title, fontsize=6, color="black" if view.hit is None else
                      (HIT if view.hit else MISS))
  _save(fig, path)


def save_patch_replacement_figure(path: str | pathlib.Path, sketches: Sequence[np.ndarray],
                                  syntheses: Sequence[np.ndarray], photos: Sequence[np.ndarray],
                                  titles: Sequence[str], similarity: str, grid: int) -> None:
  """One row a pair: sketch | synthesis (each sketch cell filled with the photo cell picked by
  `similarity`) | photo."""
  fig, axes = plt.subplots(len(sketches), 3, figsize=(5.4, 1.9 * len(sketches)), squeeze=False)
  heads = ("sketch", f"patch replacement\n(by {similarity})", "photo")
  for r, images in enumerate(zip(sketches, syntheses, photos)):
    for c, image in enumerate(images):
      ax = axes[r, c]
      size = image.shape[0]
      ax.imshow(image, extent=(0, size, size, 0))
      for k in range(1, grid):
        ax.axhline(k * size / grid, color="0.6", lw=0.3)
        ax.axvline(k * size / grid, color="0.6", lw=0.3)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(heads[c], fontsize=7)
    axes[r, 0].set_ylabel(titles[r], fontsize=6)
  _save(fig, path)


def save_retrieve_figure(path: str | pathlib.Path, query: np.ndarray, query_title: str,
                         views: Sequence[PairView], grid: int, per_row: int = 3) -> None:
  """A retrieval explained: the query sketch, then each of its top photos in rank order
  (`per_row` a row) with the pair's CA correspondences (sketch -> photo), hits framed green."""
  rows = max(1, -(-len(views) // per_row))
  fig, axes = plt.subplots(rows, 1 + per_row, figsize=(1.8 + 3.4 * per_row, 2.2 * rows),
                           gridspec_kw={"width_ratios": [1] + [2 + GAP] * per_row},
                           squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  axes[0, 0].imshow(query)
  axes[0, 0].set_title(query_title, fontsize=7, fontweight="bold")
  for k, view in enumerate(views):
    ax = axes[k // per_row, 1 + k % per_row]
    ax.axis("on")
    _pair_panel(ax, view, grid, "ca")
    ax.set_title(f"{view.title}\n{ax.get_title()}", fontsize=6,
                 color="black" if view.hit is None else (HIT if view.hit else MISS))
  _save(fig, path)


def _save(fig, path: str | pathlib.Path) -> None:
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
