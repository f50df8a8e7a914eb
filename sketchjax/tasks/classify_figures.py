"""Figures of the classify task: test accuracy against training drawings seen."""

from __future__ import annotations

import json
import pathlib
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)


def save_learning_curves(curves: Mapping[str, Sequence[Mapping[str, float]]],
                         path: pathlib.Path) -> None:
  """Top-1 (solid) and top-5 (dashed) against drawings seen, one colour a run.

  curves: run name -> rows with 'drawings_seen', 'top1', 'top5' (fractions).
  """
  fig, ax = plt.subplots(figsize=(6.0, 4.0))
  for index, (name, rows) in enumerate(curves.items()):
    rows = sorted(rows, key=lambda r: r["drawings_seen"])
    seen = [r["drawings_seen"] / 1000 for r in rows]
    color = f"C{index}"
    ax.plot(seen, [100 * r["top1"] for r in rows], "o-", color=color, label=f"{name} top-1")
    ax.plot(seen, [100 * r["top5"] for r in rows], "s--", color=color, alpha=0.5,
            label=f"{name} top-5")
  ax.set_xlabel("training drawings seen (thousands)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def read_curve(workdir: pathlib.Path) -> list[dict]:
  """The rows of <workdir>/learning_curve.json (written by mode=learning_curve)."""
  return json.loads((pathlib.Path(workdir) / "learning_curve.json").read_text())["rows"]
