"""Multi-host on one machine: 2 processes x 4 CPU devices train exactly like 1 x 8.

Runs `launch/local_multiprocess.sh` (2 JAX processes joined by jax.distributed,
gloo collectives) and, beside it, a plain single process with 8 simulated
devices, both on the quickstart smoke config for 4 steps, and compares the
per-step training losses written to <workdir>/metrics.jsonl. The 2-process run
is also the reference of the preemption test (a step of 2 processes with gloo
collectives takes 10-30 s on 2 cores, so the module runs as few as it can).
"""

import collections
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launch" / "local_multiprocess.sh"
TIMEOUT_S = 480
NUM_STEPS = 4
TRAIN_FLAGS = (
    "--config=configs/quickstart.py:smoke",
    f"--config.train.num_steps={NUM_STEPS}",
    "--config.train.log_every=1",  # One train row per step.
    "--config.train.eval_every=1000",  # Evaluate and checkpoint only at the end.
    "--config.train.checkpoint_every=1000",
    # A dropout mask follows an example's position in the global batch, which
    # the split over processes permutes; without dropout a step is order-free.
    "--config.model.dropout=0",
    "--config.model.attention_dropout=0",
)
_LAUNCH_VARS = ("XLA_FLAGS", "JAX_PLATFORMS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS")


def _environment() -> dict[str, str]:
  """This environment without launch settings, on CPU, with the shared compile cache."""
  env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
  env.update(JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
             PYTHON=sys.executable)
  return env


def _start(command: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen:
  """Starts `command` in its own process group (so a timeout can end all of it)."""
  with open(log, "w") as out:
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
  """Ends proc's whole process group: TERM, then KILL after 10 s."""
  for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:
      return
    try:
      proc.wait(timeout=10)
      return
    except subprocess.TimeoutExpired:
      continue


def _finish(proc: subprocess.Popen, what: str, log: pathlib.Path) -> None:
  """Waits for proc; fails the test with its log's tail on a timeout or an error."""
  try:
    proc.wait(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    _stop(proc)
    pytest.fail(f"{what} ran over {TIMEOUT_S} s; end of {log}:\n" + _tail(log))
  if proc.returncode != 0:
    pytest.fail(f"{what} exited with status {proc.returncode}; end of {log}:\n" + _tail(log))


def _tail(path: pathlib.Path, lines: int = 40) -> str:
  return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _rows(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _train_losses(rows: list[dict]) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train" and "loss" in r}


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory) -> dict[str, pathlib.Path]:
  """Workdirs of the two runs, started side by side: "2x4" (launcher) and "1x8"."""
  root = tmp_path_factory.mktemp("multiprocess")
  dirs = {"2x4": root / "two_processes", "1x8": root / "one_process"}
  env = _environment()
  launched = [
      ("2x4", [str(LAUNCHER), "--processes=2", "--devices_per_process=4", *TRAIN_FLAGS,
               f"--workdir={dirs['2x4']}"], env),
      ("1x8", [sys.executable, "-m", "sketchjax.main", *TRAIN_FLAGS,
               f"--workdir={dirs['1x8']}"],
       dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8")),
  ]
  procs = []
  try:
    for name, command, run_env in launched:
      log = root / f"{name}.log"
      procs.append((name, _start(command, run_env, log), log))
    for name, proc, log in procs:
      _finish(proc, f"the {name} run", log)
  finally:
    for _, proc, _ in procs:
      _stop(proc)
  return dirs


def test_two_processes_train_like_one_process(workdirs):
  two, one = _train_losses(_rows(workdirs["2x4"])), _train_losses(_rows(workdirs["1x8"]))
  steps = list(range(1, NUM_STEPS + 1))
  assert sorted(two) == steps and sorted(one) == steps
  np.testing.assert_allclose([two[s] for s in steps], [one[s] for s in steps], rtol=1e-4)


def test_two_processes_evaluate_like_one_process(workdirs):
  final = {name: [r for r in _rows(d) if r["split"] == "eval" and r["step"] == NUM_STEPS]
           for name, d in workdirs.items()}
  assert len(final["2x4"]) == len(final["1x8"]) == 1
  for metric in ("loss", "top1", "top5", "count"):
    np.testing.assert_allclose(final["2x4"][0][metric], final["1x8"][0][metric], rtol=1e-4)


def test_both_processes_ran_and_only_process_zero_wrote(workdirs):
  workdir = workdirs["2x4"]
  for index in (0, 1):
    log = (workdir / "logs" / f"process_{index}.log").read_text(errors="replace")
    assert re.search(rf"process {index} of 2\b", log), f"process_{index}.log:\n{log[-2000:]}"
  rows = collections.Counter((r["step"], r["split"]) for r in _rows(workdir))
  assert all(count == 1 for count in rows.values()), f"rows written twice: {rows}"
  assert len(list((workdir / "tensorboard").glob("**/events.out.tfevents*"))) == 1


# Preemption with two processes: SIGTERM reaches process 1 only; both stop after
# the same step with a checkpoint (status 75), and the resumed run ends with the
# train state and losses of the uninterrupted 2-process run of `workdirs`, bit
# for bit.


def _child_pid(launcher: subprocess.Popen, process_id: int) -> int:
  """The pid of the launcher's python process with JAX_PROCESS_ID=process_id."""
  children = pathlib.Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
  for pid in children.read_text().split():
    environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    if f"JAX_PROCESS_ID={process_id}".encode() in environ:
      return int(pid)
  raise AssertionError(f"no process {process_id} among the launcher's children")


def _launch(workdir: pathlib.Path, log: pathlib.Path) -> subprocess.Popen:
  return _start([str(LAUNCHER), "--processes=2", "--devices_per_process=4", *TRAIN_FLAGS,
                 f"--workdir={workdir}"], _environment(), log)


def _wait_for(proc: subprocess.Popen, path: pathlib.Path, text: str) -> None:
  deadline = time.monotonic() + TIMEOUT_S
  while not (path.exists() and text in path.read_text(errors="replace")):
    if proc.poll() is not None or time.monotonic() > deadline:
      _stop(proc)
      pytest.fail(f"{text!r} never appeared in {path}")
    time.sleep(0.05)


def _final_state(workdir: pathlib.Path):
  """The train state of the last checkpoint on one device of this process (it was
  written by 2 processes: restoring needs a target of this topology)."""
  path = workdir / "checkpoints" / str(NUM_STEPS) / "state"
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path)
  metadata = getattr(metadata, "item_metadata", metadata)
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state = checkpointer.restore(path, jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), metadata))
  is_key = lambda x: jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
  return jax.device_get(jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x,
                                     state))


def test_two_processes_stop_together_on_sigterm_to_one_and_resume_exactly(workdirs, tmp_path):
  resumed, reference = tmp_path / "resumed", workdirs["2x4"]
  try:
    proc = _launch(resumed, tmp_path / "preempted.log")
    _wait_for(proc, resumed / "logs" / "process_0.log", f"step 2/{NUM_STEPS} ")
    os.kill(_child_pid(proc, 1), signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT_S) == 75, _tail(tmp_path / "preempted.log")
  finally:
    _stop(proc)
  stops = []
  for index in (0, 1):
    log = (resumed / "logs" / f"process_{index}.log").read_text(errors="replace")
    stop = re.search(r"preempted: (.*) received: stopped after step (\d+) of", log)
    assert stop, f"process_{index}.log:\n{log[-2000:]}"
    stops.append(stop.groups())
  assert stops[1][0] == "SIGTERM" and stops[0][0] == "a stop signal on another process"
  assert stops[0][1] == stops[1][1] and 2 <= int(stops[0][1]) < NUM_STEPS
  try:
    proc = _launch(resumed, tmp_path / "resumed.log")
    _finish(proc, "the resumed run", tmp_path / "resumed.log")
  finally:
    _stop(proc)
  log = (resumed / "logs" / "process_1.log").read_text(errors="replace")
  assert f"resumed from the checkpoint of step {stops[0][1]} " in log
  timing = ("steps_per_sec", "examples_per_sec")
  rows = [[{k: v for k, v in r.items() if k not in timing} for r in _rows(w)]
          for w in (resumed, reference)]
  assert rows[0] == rows[1]
  jax.tree.map(np.testing.assert_array_equal, _final_state(resumed), _final_state(reference))
