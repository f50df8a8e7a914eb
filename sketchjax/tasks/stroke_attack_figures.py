"""Figures of the stroke_attack task: sketches before and after each attack, and success
against the budgets. Results are the per-sketch dicts of `stroke_attack.attack_all`."""

from __future__ import annotations

import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sketchjax.methods import raster_attack  # noqa: E402

REMOVED = "tab:red"


def _polylines(xy: np.ndarray, lens: np.ndarray) -> list[np.ndarray]:
  return [xy[k, :n] for k, n in enumerate(lens) if n > 0]


def _draw(ax, stroke: np.ndarray, color, width: float = 2.0) -> None:
  ax.plot(stroke[:, 0], stroke[:, 1], "o-" if len(stroke) == 1 else "-", color=color,
          linewidth=width, markersize=width + 1, solid_capstyle="round")


def _finish(ax, size_hint: np.ndarray, title: str) -> None:
  low, high = size_hint.min(0), size_hint.max(0)
  pad = 0.08 * float((high - low).max() + 1e-6)
  ax.set_xlim(low[0] - pad, high[0] + pad)
  ax.set_ylim(high[1] + pad, low[1] - pad)  # y down, as drawn
  ax.set_aspect("equal")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=7)


def _outcome(result, unit: str, o: int, names) -> str:
  if not result[f"{unit}/success"][o]:
    return "no flip"
  return (f"-{int(result[f'{unit}/removed'][o])} ({100 * result[f'{unit}/cost_share'][o]:.0f}% "
          f"ink): {names[int(result[f'{unit}/prediction'][o])]}")


def save_examples(results: Sequence[dict], class_names: Sequence[str],
                  radii_units: Sequence[float], path: pathlib.Path, count: int,
                  segment_title: str = "P-SLA segments") -> None:
  """One row a sketch: the drawing with its prediction; the strokes SLA removes and the
  segments the first segment order removes (`segment_title`), in red; PGD's displaced
  drawing (black) over the original (grey) at the smallest radius that flips it."""
  chosen = list(results[:count])
  fig, axes = plt.subplots(len(chosen), 4, figsize=(8.0, 2.1 * len(chosen)), squeeze=False)
  for row, result in zip(axes, chosen):
    strokes = _polylines(result["xy"], result["lens"])
    points = np.concatenate(strokes)
    for stroke in strokes:
      _draw(row[0], stroke, "black")
    _finish(row[0], points, f"{result['drawing'].word}: {class_names[int(result['prediction'])]}")
    removed = result["strokes/removed_mask"][0]
    for k, stroke in enumerate(strokes):
      _draw(row[1], stroke, REMOVED if removed[k] else "black")
    _finish(row[1], points, "SLA strokes " + _outcome(result, "strokes", 0, class_names))
    segment_removed, stroke_of = result["segments/removed_mask"][0], result["segment_stroke"]
    for k, stroke in enumerate(strokes):
      ends = stroke if len(stroke) > 1 else np.repeat(stroke, 2, axis=0)
      for g, gone in enumerate(segment_removed[stroke_of == k]):
        _draw(row[2], ends[g:g + 2], REMOVED if gone else "black")
    _finish(row[2], points, f"{segment_title} " + _outcome(result, "segments", 0, class_names))
    flipped = np.flatnonzero(result["pgd/success"])
    k = int(flipped[0]) if len(flipped) else len(radii_units) - 1
    moved = _polylines(result["xy"] + result["pgd/delta"][k], result["lens"])
    for before, after in zip(strokes, moved):
      _draw(row[3], before, "0.75", width=3.0)
      _draw(row[3], after, "black" if len(flipped) else "0.4", width=1.5)
    verdict = class_names[int(result["pgd/prediction"][k])] if len(flipped) else "no flip"
    _finish(row[3], np.concatenate([points, *moved]),
            f"PGD r={radii_units[k]:g}: {verdict}")
  fig.suptitle("removed ink in red; PGD: original grey, moved black", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_budget_curves(results: Sequence[dict], radii_units: Sequence[float],
                       path: pathlib.Path,
                       orders: tuple[Sequence[str], Sequence[str]] = (
                           raster_attack.STROKE_ORDERS, raster_attack.SEGMENT_ORDERS)) -> None:
  """Success rate against the share of ink removed (the removal `orders` of strokes and of
  segments) and against the displacement radius (PGD and random displacement)."""
  grid = np.linspace(0, 1, 101)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for unit, names, style in (("strokes", orders[0], "-"), ("segments", orders[1], "--")):
    for o, name in enumerate(names):
      success = np.array([r[f"{unit}/success"][o] for r in results])
      share = np.array([r[f"{unit}/cost_share"][o] for r in results])
      curve = [(success & (share <= b)).mean() for b in grid]
      axes[0].plot(grid, curve, style, label=f"{unit}: {name}")
  axes[0].set_xlabel("share of ink length removed")
  axes[0].set_ylabel("prediction flipped (share of sketches)")
  axes[0].legend(fontsize=7)
  for key, label in (("pgd/success", "PGD on points"), ("random/success", "random displacement")):
    axes[1].plot(radii_units, [np.mean([r[key][k] for r in results])
                               for k in range(len(radii_units))], "o-", label=label)
  axes[1].set_xscale("log", base=2)
  axes[1].set_xlabel("displacement radius a point (canvas units)")
  axes[1].set_ylabel("prediction flipped (share of sketches)")
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
