"""The generic trainer on a tiny MLP regression with dropout, on 1 and 8 CPU devices."""

import json
import os
import signal

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer

NUM_EXAMPLES, BATCH, FEATURES = 64, 16, 4


class _MLP(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(nn.Dense(8)(x))
    x = nn.Dropout(0.25, deterministic=not train)(x)
    return nn.Dense(1)(x)[:, 0]


def _objective() -> trainer.Objective:
  model = _MLP()

  def init(rng, batch):
    return model.init(rng, batch["x"], train=False)

  def loss(params, batch, rng):
    pred = model.apply(params, batch["x"], train=True, rngs={"dropout": rng})
    mse = jnp.mean((pred - batch["y"]) ** 2)
    return mse, {"mean_prediction": jnp.mean(pred)}

  def evaluate(params, batch):
    pred = model.apply(params, batch["x"], train=False)
    return {"mse": jnp.sum(batch["weight"] * (pred - batch["y"]) ** 2),
            "count": jnp.sum(batch["weight"])}

  return trainer.Objective(init=init, loss=loss, evaluate=evaluate)


def _examples(nan_at: int | None = None) -> list[dict]:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(NUM_EXAMPLES, FEATURES)).astype(np.float32)
  y = (x @ np.arange(1, FEATURES + 1) + 0.1 * rng.normal(size=NUM_EXAMPLES)).astype(np.float32)
  if nan_at is not None:
    x[nan_at] = np.nan
  return [{"x": x[i], "y": y[i], "weight": np.float32(1)} for i in range(NUM_EXAMPLES)]


def _train_iter(nan_at: int | None = None):
  """grain DatasetIterator of batches of 16, forever, in a fixed order."""
  return iter(grain.MapDataset.source(_examples(nan_at)).repeat(None).batch(BATCH)
              .to_iter_dataset())


def _make_eval_iter():
  return grain.MapDataset.source(_examples()[:40]).batch(BATCH).to_iter_dataset()


def _config(num_steps: int, checkpoint_every: int = 100):
  config = trainer.default_config()
  config.train.update(num_steps=num_steps, log_every=1, eval_every=5,
                      checkpoint_every=checkpoint_every, keep_checkpoints=2)
  config.optimizer.update(learning_rate=1e-2, schedule="sketchxai", schedule_step_every=3,
                          schedule_period=4, grad_clip_norm=1.0)
  return config


def _read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _train_losses(workdir) -> list[float]:
  return [r["loss"] for r in _read_metrics(workdir) if r["split"] == "train"]


def _params(workdir, config, mesh=None):
  example = {"x": np.zeros((BATCH, FEATURES), np.float32)}
  return trainer.restore_params(str(workdir), _objective(), example, config, mesh)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """10 uninterrupted steps on all 8 devices: (workdir, returned eval metrics)."""
  workdir = tmp_path_factory.mktemp("full")
  result = trainer.train_and_evaluate(_config(10), str(workdir), _objective(), _train_iter(),
                                      _make_eval_iter)
  return workdir, result


def test_same_losses_on_one_and_eight_devices(full_run, tmp_path):
  workdir, _ = full_run
  one_device = mesh_lib.make_mesh(devices=jax.devices()[:1])
  trainer.train_and_evaluate(_config(10), str(tmp_path), _objective(), _train_iter(),
                             _make_eval_iter, mesh=one_device)
  losses_8, losses_1 = _train_losses(workdir), _train_losses(tmp_path)
  assert len(losses_8) == 10
  np.testing.assert_allclose(losses_1, losses_8, atol=1e-5, rtol=1e-5)


def test_fsdp_and_a_plain_iterator_give_the_same_losses(full_run, tmp_path, caplog):
  workdir, _ = full_run
  config = _config(10)
  config.mesh.fsdp = 2
  plain_iter = (batch for batch in _train_iter())
  with caplog.at_level("WARNING"):
    trainer.train_and_evaluate(config, str(tmp_path), _objective(), plain_iter, None)
  assert "not a grain iterator" in caplog.text
  np.testing.assert_allclose(_train_losses(tmp_path), _train_losses(workdir), rtol=1e-5)
  kernel = _params(tmp_path, config)["params"]["Dense_0"]["kernel"]  # [4, 8]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")


def test_resume_ends_with_the_same_params(full_run, tmp_path, caplog):
  workdir, _ = full_run
  trainer.train_and_evaluate(_config(6, checkpoint_every=3), str(tmp_path), _objective(),
                             _train_iter(), _make_eval_iter)
  with caplog.at_level("INFO"):
    trainer.train_and_evaluate(_config(10, checkpoint_every=3), str(tmp_path), _objective(),
                               _train_iter(), _make_eval_iter)
  assert "resumed from the checkpoint of step 6" in caplog.text
  steps = [r["step"] for r in _read_metrics(tmp_path) if r["split"] == "train"]
  assert steps == list(range(1, 11))
  resumed, uninterrupted = _params(tmp_path, _config(10)), _params(workdir, _config(10))
  jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)
  assert _train_losses(tmp_path) == _train_losses(workdir)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
  # Example 40 is in the 3rd batch (examples 32..47): step 3 has a NaN loss.
  with pytest.raises(FloatingPointError, match="at step 3"):
    trainer.train_and_evaluate(_config(10, checkpoint_every=2), str(tmp_path), _objective(),
                               _train_iter(nan_at=40), None)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_metrics_jsonl_and_tensorboard(full_run):
  workdir, result = full_run
  records = _read_metrics(workdir)
  assert all("step" in r and r["split"] in ("train", "eval") for r in records)
  train = [r for r in records if r["split"] == "train"]
  assert {"loss", "grad_norm", "learning_rate", "mean_prediction", "steps_per_sec",
          "examples_per_sec"} <= set(train[0])
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [5, 10]
  assert evals[-1]["count"] == 40
  assert result == {k: v for k, v in evals[-1].items() if k not in ("step", "split")}
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(workdir / "tensorboard"))


def test_has_checkpoint_counts_finished_and_set_aside_steps_only(tmp_path):
  checkpoints = tmp_path / "checkpoints"
  assert not trainer.has_checkpoint(str(tmp_path))
  (checkpoints / "3.orbax-checkpoint-tmp-1700000000").mkdir(parents=True)
  assert not trainer.has_checkpoint(str(tmp_path))  # an interrupted first save
  (checkpoints / "3.corrupt-20261122-150000").mkdir()
  assert trainer.has_checkpoint(str(tmp_path))
  (checkpoints / "3.corrupt-20261122-150000").rmdir()
  (checkpoints / "6").mkdir()
  assert trainer.has_checkpoint(str(tmp_path))


class _BatchNormMLP(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(8)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(1)(nn.relu(x))[:, 0]


def _stateful_objective() -> trainer.Objective:
  """A BatchNorm model: the running statistics are the objective's model state."""
  model = _BatchNormMLP()

  def init(rng, batch):
    variables = model.init(rng, batch["x"], train=False)
    return variables["params"], {"batch_stats": variables["batch_stats"]}

  def loss(params, model_state, batch, rng):
    del rng
    pred, updates = model.apply({"params": params, **model_state}, batch["x"], train=True,
                                mutable=["batch_stats"])
    return jnp.mean((pred - batch["y"]) ** 2), ({}, dict(updates))

  return trainer.Objective(init=init, loss=loss, evaluate=None, stateful=True)


def _stateful_eval(variables):
  params, model_state = variables
  x = np.stack([e["x"] for e in _examples()[:40]])
  y = np.stack([e["y"] for e in _examples()[:40]])
  pred = _BatchNormMLP().apply({"params": params, **model_state}, x, train=False)
  return {"mse": float(np.mean((np.asarray(pred) - y) ** 2))}


def _stateful_run(workdir, num_steps, mesh=None):
  return trainer.train_and_evaluate(_config(num_steps, checkpoint_every=3), str(workdir),
                                    _stateful_objective(), _train_iter(), None, mesh=mesh,
                                    custom_eval=_stateful_eval)


def test_stateful_objective_trains_resumes_and_evaluates(tmp_path):
  """BatchNorm statistics: global over the batch (1 and 8 devices agree), updated
  every step, restored on resume (the resumed run ends bit for bit equal)."""
  eight = _stateful_run(tmp_path / "eight", 10)
  one = _stateful_run(tmp_path / "one", 10, mesh_lib.make_mesh(devices=jax.devices()[:1]))
  np.testing.assert_allclose(_train_losses(tmp_path / "one"),
                             _train_losses(tmp_path / "eight"), rtol=1e-5)
  # float sums differ (by 1.3e-4 after 10 steps on an AVX-512 Intel Xeon)
  np.testing.assert_allclose(one["mse"], eight["mse"], rtol=1e-3)
  assert [r["step"] for r in _read_metrics(tmp_path / "eight") if r["split"] == "eval"] == [5, 10]

  _stateful_run(tmp_path / "resumed", 6)
  resumed = _stateful_run(tmp_path / "resumed", 10)
  assert resumed == eight
  assert _train_losses(tmp_path / "resumed") == _train_losses(tmp_path / "eight")
  example = {"x": np.zeros((BATCH, FEATURES), np.float32)}
  params, model_state = trainer.restore_params(str(tmp_path / "resumed"),
                                               _stateful_objective(), example, _config(10))
  mean = np.asarray(model_state["batch_stats"]["BatchNorm_0"]["mean"])
  assert np.all(mean != 0)  # updated from the zeros of init
  assert set(params) == {"Dense_0", "BatchNorm_0", "Dense_1"}


def test_stateful_objective_refuses_microbatches(tmp_path):
  config = _config(2)
  config.train.microbatches = 2
  with pytest.raises(ValueError, match="stateful"):
    trainer.train_and_evaluate(config, str(tmp_path), _stateful_objective(), _train_iter(), None)


# Preemption: a signal during the eval of step 5 (custom_eval sends it to this
# process) stops the run after the next step with a checkpoint; resumed, it
# ends like an uninterrupted run, down to the log means that straddle the stop.

def _preemption_run(workdir, num_steps: int = 10, signal_at: int | None = None,
                    signum: int = signal.SIGTERM):
  config = _config(num_steps, checkpoint_every=100)
  config.train.log_every = 4  # The stop falls between two log lines.

  def custom_eval(params):
    step = len([r for r in _read_metrics(workdir) if r["split"] == "eval"]) * 5 + 5
    if step == signal_at:
      signal.raise_signal(signum)
    return {"mean_kernel": float(jnp.mean(params["params"]["Dense_0"]["kernel"]))}

  return trainer.train_and_evaluate(config, str(workdir), _objective(), _train_iter(), None,
                                    custom_eval=custom_eval)


def _rows_without_timing(workdir) -> list[dict]:
  timing = ("steps_per_sec", "examples_per_sec")
  return [{k: v for k, v in r.items() if k not in timing} for r in _read_metrics(workdir)]


@pytest.fixture(scope="module")
def uninterrupted_preemption_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  _preemption_run(workdir)
  return workdir


@pytest.mark.parametrize("several_processes", [False, True])
def test_signal_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(
    uninterrupted_preemption_run, tmp_path, monkeypatch, caplog, several_processes):
  # With several processes the requests are all-gathered after each step (here
  # over the one process there is): the same step.
  monkeypatch.setattr(trainer, "_several_processes", lambda: several_processes)
  handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
  with pytest.raises(trainer.Preempted) as stop:
    _preemption_run(tmp_path, signal_at=5,
                    signum=signal.SIGINT if several_processes else signal.SIGTERM)
  expected_step = 6
  assert stop.value.step == expected_step
  assert f"stopped after step {expected_step} of 10" in str(stop.value)
  assert handlers == {sig: signal.getsignal(sig) for sig in handlers}  # restored
  assert sorted(os.listdir(tmp_path / "checkpoints")) == [str(expected_step)]
  assert [r["step"] for r in _read_metrics(tmp_path) if r["split"] == "train"] == [4]
  with caplog.at_level("INFO"):
    _preemption_run(tmp_path)
  assert f"resumed from the checkpoint of step {expected_step}" in caplog.text
  assert _rows_without_timing(tmp_path) == _rows_without_timing(uninterrupted_preemption_run)
  resumed, uninterrupted = _params(tmp_path, _config(10)), _params(
      uninterrupted_preemption_run, _config(10))
  jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} of the event files in `folder` (TFRecord framing:
  uint64 length, uint32 crc, event proto, uint32 crc)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  scalars = {}
  for path in sorted(folder.glob("events.out.tfevents*")):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      length = int.from_bytes(data[offset:offset + 8], "little")
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def test_tensorboard_has_the_curves_of_metrics_jsonl(full_run):
  workdir, _ = full_run
  scalars = _tensorboard_scalars(workdir / "tensorboard")
  train = [r for r in _read_metrics(workdir) if r["split"] == "train"]
  for name in ("loss", "grad_norm", "learning_rate", "steps_per_sec", "examples_per_sec"):
    assert scalars[f"train/{name}"] == [(r["step"], pytest.approx(r[name], rel=1e-6))
                                        for r in train]
  assert [step for step, _ in scalars["eval/mse"]] == [5, 10]
