"""Metrics to workdir/metrics.jsonl (one JSON object a line) and TensorBoard."""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import jax
import tensorboardX


class MetricWriter:
  """Appends {"step", "split", metric...} lines to workdir/metrics.jsonl and
  writes scalars "<split>/<metric>" to TensorBoard event files in
  workdir/tensorboard. Only process 0 writes; elsewhere every call is a no-op."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if not self._active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard_dir = os.path.join(workdir, "tensorboard")
    self._jsonl = open(self._jsonl_path, "a", encoding="utf-8")
    self._tensorboard = tensorboardX.SummaryWriter(self._tensorboard_dir)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    """metrics: scalar name -> value (numpy or Python numbers)."""
    if not self._active:
      return
    values = {name: float(value) for name, value in metrics.items()}
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, int(step))
    self._tensorboard.flush()

  def rewind(self, step: int, redone_splits: Sequence[str] = ()) -> None:
    """Forgets what a killed run wrote after `step` (and the rows of
    `redone_splits` at `step`, which the caller writes again): metrics.jsonl
    keeps only the earlier rows (a torn last line goes too), and TensorBoard
    is told to purge events after `step`."""
    if not self._active:
      return
    self._jsonl.close()
    with open(self._jsonl_path, encoding="utf-8") as f:
      lines = f.read().splitlines()
    kept = []
    for line in lines:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # Torn by the kill.
      if row["step"] < step or (row["step"] == step and row["split"] not in redone_splits):
        kept.append(line + "\n")
    if len(kept) < len(lines):
      with open(self._jsonl_path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(kept)
      os.replace(self._jsonl_path + ".tmp", self._jsonl_path)
    self._jsonl = open(self._jsonl_path, "a", encoding="utf-8")
    self._tensorboard.close()
    self._tensorboard = tensorboardX.SummaryWriter(self._tensorboard_dir, purge_step=step + 1)

  def close(self) -> None:
    if self._active:
      self._jsonl.close()
      self._tensorboard.close()
