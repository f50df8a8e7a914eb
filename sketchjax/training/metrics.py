"""Metrics to workdir/metrics.jsonl (one JSON object a line) and TensorBoard."""

from __future__ import annotations

import json
import os
from typing import Mapping

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
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    self._tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

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

  def close(self) -> None:
    if self._active:
      self._jsonl.close()
      self._tensorboard.close()
