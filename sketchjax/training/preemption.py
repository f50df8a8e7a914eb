"""Stopping a training run cleanly on SIGTERM or SIGINT (preemption).

Cloud TPUs, SLURM and Kubernetes preempt a job by sending SIGTERM (and, some
time later, SIGKILL); Ctrl-C sends SIGINT. While `StopSignals` is active, the
first of these signals only records a request: the trainer finishes the step
in progress, writes a checkpoint, waits for the write and raises `Preempted`,
which `sketchjax.main` turns into exit status `EXIT_STATUS` (75). The same
command then resumes from that checkpoint. A second signal stops at once (the
previous handler runs: Ctrl-C twice raises KeyboardInterrupt).

With several processes a signal may reach only some of them, or reach them
during different steps; they must still stop after the same step, or the
collective checkpoint save would hang. After each step they all-gather their
requests (`on_any_process`: a few bytes, beside the all-gather of batch shapes
the loop already does each step with several processes; orbax's preemption
sync point would only hear SIGTERM, and only from JAX's coordination service)
and all stop if any was asked to.

(A vote reduced inside the train step would cost nothing more, but on
XLA:CPU a second, independent all-reduce in the step can deadlock the
in-process collectives of the simulated devices: each device may reach a
different one first.)
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

EXIT_STATUS = 75  # EX_TEMPFAIL of sysexits.h: a temporary failure; run the same command again.
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """A training run stopped early on a signal, after writing a checkpoint."""

  def __init__(self, step: int, num_steps: int, signal_name: str, checkpoint_dir: str):
    self.step, self.num_steps = step, num_steps
    self.signal_name, self.checkpoint_dir = signal_name, checkpoint_dir
    super().__init__(
        f"{signal_name} received: stopped after step {step} of {num_steps}; the checkpoint "
        f"of step {step} is in {checkpoint_dir}; run the same command to resume")


class StopSignals:
  """Context manager: while active, SIGTERM and SIGINT request a stop instead of
  ending the process. Handlers can only be installed from the main thread;
  elsewhere (a notebook's worker thread) the signals keep their handlers."""

  def __init__(self):
    self.signal_name: str | None = None  # of the first signal received
    self._previous: dict[int, Any] = {}

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    else:
      logging.warning("not in the main thread: SIGTERM and SIGINT will not stop the run "
                      "with a checkpoint")
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if self.requested:  # A second signal: the previous handler, at once.
      previous = self._previous.get(signum, signal.SIG_DFL)
      self.__exit__()
      if callable(previous):
        previous(signum, frame)
      else:
        signal.raise_signal(signum)
      return
    self.signal_name = name
    logging.warning("%s received: finishing the step in progress, then writing a "
                    "checkpoint and stopping (send it again to stop at once, without one)",
                    name)


def on_any_process(requested: bool) -> bool:
  """Whether any process was asked to stop (collective: every process calls it
  at the same point)."""
  if jax.process_count() == 1:
    return requested
  return bool(np.max(multihost_utils.process_allgather(np.int32(requested))))
