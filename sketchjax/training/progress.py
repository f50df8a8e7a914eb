"""Progress lines with speed and ETA, e.g.

  step 120/1000 (12.0%) loss 1.234 | 8.1 steps/s | 518 examples/s | ETA 1m48s

The speeds are those since the previous line (the first line of a run
includes the compilation); the ETA assumes the latest speed holds.
"""

from __future__ import annotations

import time

from absl import logging
import jax


def format_duration(seconds: float) -> str:
  """45s, 1m48s, 2h03m, 3d04h."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  if seconds < 86400:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


class Progress:
  """Measures steps/s between calls to `update` and logs (process 0) a line with the ETA."""

  def __init__(self, num_steps: int, start_step: int):
    self._num_steps = num_steps
    self._last_step, self._last_time = start_step, time.monotonic()

  def update(self, step: int, loss: float, examples_per_step: int) -> tuple[float, float]:
    """Logs the line for `step` (steps done) and returns (steps/s, examples/s)
    since the last update; `examples_per_step` is the global batch size."""
    now = time.monotonic()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    if jax.process_index() == 0:
      eta = format_duration((self._num_steps - step) / rate) if rate > 0 else "?"
      logging.info("step %d/%d (%.1f%%) loss %.4g | %.1f steps/s | %.0f examples/s | ETA %s",
                   step, self._num_steps, 100.0 * step / self._num_steps, loss, rate,
                   rate * examples_per_step, eta)
    return rate, rate * examples_per_step
