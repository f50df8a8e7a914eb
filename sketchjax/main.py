"""Command line: `python -m sketchjax.main --config=configs/<name>.py --workdir=<dir>`.

Parses flags, starts `jax.distributed` on multi-host launches, logs the
process and device counts, and hands the config to its task's `run`.
Bad input (flags, config overrides, data, workdirs) ends the run with one
`error: <message>` line on stderr and exit status 1; `--verbose_errors`
shows the traceback instead.

Exit statuses: 0 done; 1 bad input; 75 preempted: a training run stopped on
SIGTERM or SIGINT after checkpointing the step it was in (one
`preempted: <where>` line on stderr); the same command resumes it and ends
with the numbers of an uninterrupted run. A scheduler can requeue on 75
(SLURM: `#SBATCH --signal=TERM@120` and `scontrol requeue`).
"""

import logging as logging_std
import os
import re
import sys
from typing import NoReturn

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from sketchjax import xla_cpu
from sketchjax.tasks import attribution
from sketchjax.tasks import classify
from sketchjax.tasks import dfsbir
from sketchjax.tasks import draw
from sketchjax.tasks import guided_generation
from sketchjax.tasks import retrieval_attribution
from sketchjax.tasks import sbir
from sketchjax.tasks import sketch_rnn_samples
from sketchjax.tasks import sli
from sketchjax.tasks import stroke_attack
from sketchjax.tasks import zse
from sketchjax.training import checkpoint
from sketchjax.training import preemption

TASKS = {"classify": classify.run, "sli": sli.run, "attribution": attribution.run,
         "sketch_rnn_samples": sketch_rnn_samples.run, "sbir": sbir.run, "draw": draw.run,
         "dfsbir": dfsbir.run, "stroke_attack": stroke_attack.run, "zse": zse.run,
         "guided_generation": guided_generation.run,
         "retrieval_attribution": retrieval_attribution.run}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/quickstart.py[:smoke].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and figures.")
flags.mark_flags_as_required(["config", "workdir"])
_CPU_CONVOLUTIONS = flags.DEFINE_enum(
    "cpu_convolutions", "eigen", xla_cpu.CONVOLUTIONS, "Library of XLA CPU's convolutions: "
    "'winograd' ('eigen' plus Winograd products for 3x3 convolutions of small maps), 'eigen' "
    "(XLA's own, faster for our networks) or 'ynnpack' (XLA's default); see "
    "sketchjax/xla_cpu.py.")
_VERBOSE_ERRORS = flags.DEFINE_bool(
    "verbose_errors", False, "Raise bad-input errors with their traceback instead of "
    "printing one 'error:' line.")

# What bad input raises (the data readers' SketchFormatError is a ValueError).
EXPECTED_ERRORS = (ValueError, OSError, FloatingPointError, checkpoint.CheckpointError)


def _initialize_distributed() -> None:
  """Starts jax.distributed on a multi-process launch (see launch/README.md).

  JAX takes the coordinator from JAX_COORDINATOR_ADDRESS but the process count
  and id only as arguments or from a cluster it detects, so explicit launches
  (launch/local_multiprocess.sh) pass JAX_NUM_PROCESSES and JAX_PROCESS_ID.
  Otherwise JAX detects the cluster: a SLURM step of several tasks, a GKE or
  multislice TPU, or a Cloud TPU VM slice, which sets no variable of its own
  (launch/tpu_pod.sh sets SKETCHJAX_MULTIHOST=1).
  """
  env = os.environ
  if "JAX_NUM_PROCESSES" in env:
    jax.distributed.initialize(num_processes=int(env["JAX_NUM_PROCESSES"]),
                               process_id=int(env["JAX_PROCESS_ID"]))
  elif (env.get("SKETCHJAX_MULTIHOST") == "1" or int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1
        or "TPU_WORKER_HOSTNAMES" in env or "MEGASCALE_COORDINATOR_ADDRESS" in env):
    jax.distributed.initialize()


class _HideLibraryInfo(logging_std.Filter):
  """Keeps orbax's and JAX's INFO chatter out of the run log (warnings pass)."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    noisy = any(part in record.pathname for part in ("/orbax/", "/jax/_src/"))
    return record.levelno >= logging_std.WARNING or not noisy


def _fail(message: str, prefix: str = "error", status: int = 1) -> NoReturn:
  """Prints `<prefix>: <message>` (on one line) to stderr and exits with `status`."""
  print(f"{prefix}: " + re.sub(r"\s*\n\s*", " ", message.strip()), file=sys.stderr)
  sys.exit(status)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a bad flag or config override ends with one error line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:  # A missing flag, a value of the wrong type, a bad variant.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    _fail(lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}")  # Drops a traceback.
  except (AttributeError, KeyError) as error:
    _fail_on_unknown_key(error, argv)
    raise


def _fail_on_unknown_key(error: Exception, argv: list[str]) -> None:
  """Fails naming the override if `error` is ml_collections' unknown-key error,
  AttributeError(KeyError("'key'[\\nDid you mean ...?]")) or KeyError(...)."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  key, _, hint = str(error.args[0] if error.args else "").partition("\n")
  key = key.strip("'")
  for arg in argv:
    override = re.match(r"-{1,2}config\.([\w.]+)", arg)
    if override and key in override.group(1).split("."):
      _fail(f"{arg}: the config has no key {key!r}" + (f"; {hint}" if hint else ""))


def main(argv):
  logging.get_absl_handler().addFilter(_HideLibraryInfo())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.info("XLA_FLAGS: %r", xla_cpu.use_convolutions(_CPU_CONVOLUTIONS.value))
  _initialize_distributed()
  logging.info("process %d of %d; %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  try:
    config = _CONFIG.value
    if config.task not in TASKS:
      raise app.UsageError(f"unknown task {config.task!r}; expected one of {list(TASKS)}")
    TASKS[config.task](config, _WORKDIR.value)
  except preemption.Preempted as stop:
    _fail(str(stop), prefix="preempted", status=preemption.EXIT_STATUS)
  except EXPECTED_ERRORS as error:
    if _VERBOSE_ERRORS.value:
      raise
    _fail(str(error))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
