"""Exact resume: runs SIGKILLed at random moments (also mid async checkpoint
write), and runs preempted by SIGTERM or SIGINT at random steps, end
bit-identical to an uninterrupted run; a corrupt latest checkpoint falls back
to the previous one; checkpoints of another model are refused."""

import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sketchjax.training import checkpoint as checkpoint_lib
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 12
COMMAND = [sys.executable, "-m", "sketchjax.main", "--config=configs/quickstart.py:smoke",
           f"--config.train.num_steps={NUM_STEPS}", "--config.train.checkpoint_every=2",
           "--config.train.log_every=1"]
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax writes a step here, then renames it
TIMING = ("steps_per_sec", "examples_per_sec")  # the only metrics allowed to differ
RUN_TIMEOUT_S = 120


def _start(workdir: pathlib.Path, log: pathlib.Path,
           command: tuple[str, ...] = tuple(COMMAND)) -> subprocess.Popen:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONUNBUFFERED="1")
  with open(log, "w") as out:
    return subprocess.Popen([*command, f"--workdir={workdir}"], cwd=REPO, env=env,
                            stdout=out, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: pathlib.Path, status: int = 0) -> None:
  if proc.wait(timeout=RUN_TIMEOUT_S) != status:
    raise AssertionError(f"run ended with {proc.returncode}, not {status}:\n"
                         f"{log.read_text()[-3000:]}")


def _wait_until(proc: subprocess.Popen, ready: Callable[[], bool]) -> None:
  deadline = time.monotonic() + RUN_TIMEOUT_S
  while not ready():
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      raise AssertionError("the run ended or stalled before the planned kill")
    time.sleep(0.001)


def _committed(checkpoints: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in checkpoints.glob("*") if p.name.isdigit())


def _torn(checkpoints: pathlib.Path) -> set[tuple[str, int]]:
  """(name, mtime) of the unfinished checkpoint directories."""
  return {(p.name, p.stat().st_mtime_ns) for p in checkpoints.glob(f"*{TMP_SUFFIX}*")}


def _rows(workdir: pathlib.Path) -> list[dict]:
  """metrics.jsonl without the timing metrics."""
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _final_state(workdir: pathlib.Path):
  """The whole train state of the last checkpoint, as numpy arrays."""
  state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(NUM_STEPS) / "state")
  is_key = lambda x: jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
  return jax.device_get(jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, state))


def test_runs_killed_at_random_moments_end_bit_identical(tmp_path):
  reference, resumed = tmp_path / "reference", tmp_path / "resumed"
  _finish(_start(reference, tmp_path / "reference.log"), tmp_path / "reference.log")

  rng = random.Random(4)  # Seeds the kill moments.
  checkpoints = resumed / "checkpoints"
  kills = []
  for run, kind in enumerate(["write", "step", "write"]):
    log = tmp_path / f"run{run}.log"
    resume_step = max(_committed(checkpoints), default=0)
    torn_before = _torn(checkpoints)
    proc = _start(resumed, log)
    if kind == "write":  # While orbax writes the checkpoint of `target`.
      target = NUM_STEPS if run == 2 else rng.choice(range(resume_step + 2, NUM_STEPS, 2))
      _wait_until(proc, lambda: (checkpoints / f"{target}{TMP_SUFFIX}").exists() or
                  (checkpoints / str(target)).exists())  # Polling may miss a short write.
    else:  # Right after the log line of step `target`, between checkpoints.
      target = rng.randint(resume_step + 1, NUM_STEPS - 1)
      _wait_until(proc, lambda: f"step {target}/{NUM_STEPS} " in log.read_text())
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=RUN_TIMEOUT_S)
    torn = sorted(name for name, _ in _torn(checkpoints) - torn_before)
    kills.append((kind, target, resume_step, torn))
    if resume_step:
      assert f"resumed from the checkpoint of step {resume_step} " in log.read_text()
  log = tmp_path / "final.log"
  _finish(_start(resumed, log), log)
  print("kills (kind, target step, resumed from, torn checkpoint dirs):", kills)

  assert any(torn for _, _, _, torn in kills), f"no kill landed mid-write: {kills}"
  assert not _torn(checkpoints)  # Replaced by the new saves of their steps.
  assert _rows(resumed) == _rows(reference)
  jax.tree.map(np.testing.assert_array_equal, _final_state(resumed), _final_state(reference))


# Preemption: SIGTERM, then SIGINT, at random moments of the training loop.
# Logging every 4 steps, so that most stops fall between two log lines.
PREEMPT_COMMAND = (*COMMAND[:5], "--config.train.checkpoint_every=5",
                   "--config.train.log_every=4")


def test_runs_preempted_at_random_steps_end_bit_identical(tmp_path):
  reference, resumed = tmp_path / "reference", tmp_path / "resumed"
  _finish(_start(reference, tmp_path / "reference.log", PREEMPT_COMMAND),
          tmp_path / "reference.log")

  rng = random.Random(7)  # Seeds the signal moments.
  stops = []
  for run, (sig, after_eval) in enumerate([(signal.SIGTERM, 3), (signal.SIGINT, 9)]):
    log = tmp_path / f"run{run}.log"
    proc = _start(resumed, log, PREEMPT_COMMAND)
    # The smoke config evaluates every 3 steps; steps take ~0.1-0.5 s here.
    _wait_until(proc, lambda: f"eval at step {after_eval}:" in log.read_text())
    time.sleep(rng.uniform(0.0, 0.4))
    proc.send_signal(sig)
    _finish(proc, log, status=75)
    text = log.read_text()
    stop = re.search(rf"preempted: {sig.name} received: stopped after step (\d+) of "
                     rf"{NUM_STEPS}; the checkpoint of step \1 is in .*; run the same "
                     r"command to resume\n", text)
    assert stop, text[-3000:]
    step = int(stop.group(1))
    assert str(step) in os.listdir(resumed / "checkpoints")
    if stops:
      assert f"resumed from the checkpoint of step {stops[-1][1]} " in text
    stops.append((sig.name, step))
  log = tmp_path / "final.log"
  _finish(_start(resumed, log, PREEMPT_COMMAND), log)
  print("stops (signal, step):", stops)

  assert f"resumed from the checkpoint of step {stops[-1][1]} " in log.read_text()
  assert _rows(resumed) == _rows(reference)
  assert [r["step"] for r in _rows(resumed) if r["split"] == "train"] == [4, 8, 12]
  jax.tree.map(np.testing.assert_array_equal, _final_state(resumed), _final_state(reference))


# The corrupt-checkpoint fallback, on a tiny MLP through the trainer in process.

_BATCH, _FEATURES = 8, 4


class _MLP(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dropout(0.25, deterministic=not train)(nn.relu(nn.Dense(self.width)(x)))
    return nn.Dense(1)(x)[:, 0]


def _objective(width: int = 8) -> trainer.Objective:
  model = _MLP(width)

  def loss(params, batch, rng):
    pred = model.apply(params, batch["x"], train=True, rngs={"dropout": rng})
    return jnp.mean((pred - batch["y"]) ** 2), {}

  def evaluate(params, batch):
    pred = model.apply(params, batch["x"], train=False)
    return {"mse": jnp.sum(batch["weight"] * (pred - batch["y"]) ** 2),
            "count": jnp.sum(batch["weight"])}

  return trainer.Objective(init=lambda rng, batch: model.init(rng, batch["x"], train=False),
                           loss=loss, evaluate=evaluate)


def _examples() -> list[dict]:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, _FEATURES)).astype(np.float32)
  y = x.sum(-1).astype(np.float32)
  return [{"x": x[i], "y": y[i], "weight": np.float32(1)} for i in range(32)]


def _train(workdir: pathlib.Path, width: int = 8) -> dict:
  config = trainer.default_config()
  config.train.update(num_steps=4, log_every=1, eval_every=2, checkpoint_every=2,
                      keep_checkpoints=3)
  train_iter = iter(grain.MapDataset.source(_examples()).shuffle(seed=0).repeat(None)
                    .batch(_BATCH).to_iter_dataset())
  eval_iter = lambda: grain.MapDataset.source(_examples()[:16]).batch(_BATCH).to_iter_dataset()
  return trainer.train_and_evaluate(config, str(workdir), _objective(width), train_iter,
                                    eval_iter, mesh=mesh_lib.make_mesh(devices=jax.devices()[:1]))


def _params(workdir: pathlib.Path):
  state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "4" / "state")
  return jax.device_get(state["params"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
  """A 4-step run with checkpoints of steps 2 and 4."""
  workdir = tmp_path_factory.mktemp("trained")
  _train(workdir)
  return workdir


def _truncate(path: pathlib.Path, size: int) -> None:
  with open(path, "r+b") as f:
    f.truncate(size)


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


CORRUPTIONS = {
    "truncated array data": lambda step: _truncate(_largest_file(step / "state"), 100),
    "deleted array metadata": lambda step: (step / "state" / "_METADATA").unlink(),
    "truncated iterator position": lambda step: _truncate(
        next((step / "data").glob("*.json")), 3),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(trained, tmp_path, caplog,
                                                              corruption):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  CORRUPTIONS[corruption](workdir / "checkpoints" / "4")
  with caplog.at_level("WARNING"):
    _train(workdir)
  assert "checkpoint of step 4 in" in caplog.text and "is unreadable" in caplog.text
  assert "using the checkpoint of step 2 instead of the unreadable step(s) [4]" in caplog.text
  assert len(list((workdir / "checkpoints").glob("4.corrupt-*"))) == 1
  assert _rows(workdir) == _rows(trained)
  jax.tree.map(np.testing.assert_array_equal, _params(workdir), _params(trained))


def test_no_readable_checkpoint_stops_with_a_clear_error(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  for step in (2, 4):
    _truncate(workdir / "checkpoints" / str(step) / "state" / "_METADATA", 50)
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"no checkpoint in .* can be restored \(step 4: .*; step 2: "):
    _train(workdir)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]


def test_checkpoint_of_another_model_shape_is_refused(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  with pytest.raises(checkpoint_lib.CheckpointMismatchError,
                     match=r"step 4 .* another shape.*Dense_0/kernel is \(4, 8\) there, "
                           r"\(4, 16\) here"):
    _train(workdir, width=16)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
