"""Figures of the guided_generation task: generated drawings coloured by SLA, guided drawings
beside their start, and judge recognition against the guide calls spent."""

from __future__ import annotations

import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sketchjax.methods.drawing_scorer import as_simplified  # noqa: E402
from sketchjax.tasks.attribution import draw_signed  # noqa: E402

NEW = "tab:orange"


def _blank(ax, title: str) -> None:
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=7)


def save_attribution_grid(rows: Sequence[dict], path: pathlib.Path, per_class: int,
                          guide: str) -> None:
  """Generated drawings (rows: classes; `per_class` columns) with strokes coloured by their
  SLA under `guide` (red helps the class, blue works against it), titled with the class
  probability and the stroke counts that hurt / are ignored."""
  fig, axes = plt.subplots(len(rows), per_class, figsize=(1.9 * per_class, 2.0 * len(rows)),
                           squeeze=False)
  for row, axes_row in zip(rows, axes):
    for b, ax in enumerate(axes_row):
      drawing, values = row["starts"][b], row["sla"][b]
      p = float(row["probabilities"][b, row["target"]])
      if not len(drawing):
        _blank(ax, f"{row['name']}: empty")
        continue
      mass = np.abs(values).sum()
      ignored = int(np.sum(np.abs(values) < 0.05 * mass))
      draw_signed(ax, as_simplified(drawing), values,
                  f"{row['name']} p={p:.2f}\n{int(np.sum(values < 0))} hurt, {ignored} ignored")
  fig.suptitle(f"sketch-rnn samples, SLA under {guide}: red helps the class, blue hurts",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def save_guided_examples(rows: Sequence[dict], classes: Sequence[str], path: pathlib.Path,
                         count: int) -> None:
  """For the first drawing of `count` classes: the start coloured by the guide's SLA, and
  the guided drawing (strokes kept from the start black, resampled ones orange), each
  titled with the judge's probability of the class."""
  chosen = list(rows[:count])
  fig, axes = plt.subplots(2, len(chosen), figsize=(1.9 * len(chosen), 4.0), squeeze=False)
  for column, row in enumerate(chosen):
    start, final = row["starts"][0], row["guided"].drawings[0]
    judge = row["guided_judge"][:, 0, row["target"]]
    top, bottom = axes[0, column], axes[1, column]
    if not len(start) or not len(final):
      _blank(top, f"{classes[row['target']]}: empty")
      bottom.axis("off")
      continue
    draw_signed(top, as_simplified(start), row["guided"].start_sla[0],
                f"{classes[row['target']]} start\njudge p={judge[0]:.2f}")
    view = as_simplified(final)
    kept = [any(s is original for original in start) for s in final]
    for stroke, old in zip(view, kept):
      bottom.plot(stroke[:, 0], stroke[:, 1], "o-" if len(stroke) == 1 else "-",
                  color="black" if old else NEW, linewidth=2.0, markersize=3)
    bottom.set_aspect("equal")
    bottom.invert_yaxis()
    _blank(bottom, f"guided\njudge p={judge[-1]:.2f}")
  fig.suptitle("top: start, SLA under the guide (blue hurts); bottom: guided, resampled "
               "strokes orange", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def save_call_curves(summary: dict, k: int, big_k: int, path: pathlib.Path, label: str) -> None:
  """The judge's accuracy against guide evaluations a drawing: plain best-of-j (j = 1..k and
  the compute-matched one) and the guided arm after each round (at its mean calls)."""
  plain = sorted({*range(1, k + 1), big_k})
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(plain, [summary[f"plain_best_of_{j}"]["accuracy"] for j in plain], "o-",
          label="plain best-of-j by the guide")
  rounds = [key for key in summary if key.startswith("guided_round_")]
  ax.plot(np.arange(1, len(rounds) + 1), [summary[key]["accuracy"] for key in rounds], "s-",
          label="guided, after each round (at most)")
  ax.axhline(summary["plain_single_all_samples"]["accuracy"], color="0.6", linestyle="--",
             label="plain single samples")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("guide evaluations a drawing")
  ax.set_ylabel("judge accuracy")
  ax.set_title(label, fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
