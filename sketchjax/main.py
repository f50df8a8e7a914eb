"""Command line: `python -m sketchjax.main --config=configs/<name>.py --workdir=<dir>`.

Parses flags, starts `jax.distributed` on multi-host launches, logs the
process and device counts, and hands the config to its task's `run`.
"""

import logging as logging_std
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from sketchjax.tasks import classify

TASKS = {"classify": classify.run}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/quickstart.py[:smoke].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and figures.")
flags.mark_flags_as_required(["config", "workdir"])


def _is_multihost_launch() -> bool:
  """True when a cluster launcher (TPU pod, SLURM, our local script) started us."""
  return any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS",
                                       "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"))


class _HideLibraryInfo(logging_std.Filter):
  """Keeps orbax's and JAX's INFO chatter out of the run log (warnings pass)."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    noisy = any(part in record.pathname for part in ("/orbax/", "/jax/_src/"))
    return record.levelno >= logging_std.WARNING or not noisy


def main(argv):
  logging.get_absl_handler().addFilter(_HideLibraryInfo())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _is_multihost_launch():
    jax.distributed.initialize()
  logging.info("process %d of %d; %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  config = _CONFIG.value
  if config.task not in TASKS:
    raise app.UsageError(f"unknown task {config.task!r}; expected one of {list(TASKS)}")
  TASKS[config.task](config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
