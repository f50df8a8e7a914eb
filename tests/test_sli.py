"""Stroke Location Inversion: schedule, clipping, batching and the task end to end."""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sketchjax.data import pipeline, procedural, tokenize
from sketchjax.methods import sli
from sketchjax.models import sketchxainet

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config_module(name):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _batch(count, slots=None, seed=0):
  source = procedural.ProceduralSource(count, seed=seed)
  examples = [pipeline.decode(source[i]) for i in range(count)]
  config = tokenize.TokenizerConfig(max_strokes=16, stroke_buckets=slots, point_buckets=(16, 48))
  batch = tokenize.tokenize_batch([e.sketch for e in examples], [e.label for e in examples],
                                  config)
  return {k: v for k, v in batch.items() if not k.startswith("packed")}


@pytest.fixture(scope="module")
def random_model():
  """An untrained unmasked tiny SketchXAINet (padding slots matter to it)."""
  model = sketchxainet.SketchXAINet(12, hidden=16, num_layers=1, num_heads=2, mlp_dim=32,
                                    max_strokes=16, dropout=0.0, attention_dropout=0.0)
  params = jax.jit(lambda b: model.init({"params": jax.random.key(0)}, b, train=False))(
      _batch(2))["params"]
  return lambda p, b: model.apply({"params": p}, b, train=False)[0], params


def test_learning_rate_is_torch_cosine_annealing():
  config = sli.SLIConfig()
  lr = lambda i: float(sli.learning_rate(jnp.float32(i), config))
  assert lr(0) == pytest.approx(10.0)
  assert lr(25) == pytest.approx(1e-5 + (10 - 1e-5) * (1 + math.cos(math.pi / 4)) / 2)
  assert lr(50) == pytest.approx(5.000005)
  assert lr(99) == pytest.approx(1e-5 + (10 - 1e-5) * (1 + math.cos(0.99 * math.pi)) / 2,
                                 rel=2e-5)  # float32
  assert lr(100) == pytest.approx(1e-5, rel=1e-3)


def test_clip_scales_the_global_norm_to_clip_over_lr():
  config = sli.SLIConfig()
  grad = jnp.array([[3.0, 0.0], [0.0, 4.0]])  # global norm 5
  clipped = sli.clip_gradient(grad, jnp.float32(10.0), config)
  expected = (0.5 / (10 + 1e-8)) / (5 + 1e-6)
  np.testing.assert_allclose(clipped, grad * expected, rtol=1e-6)
  assert 10.0 * float(jnp.linalg.norm(clipped)) == pytest.approx(0.5, rel=1e-5)
  np.testing.assert_array_equal(sli.clip_gradient(grad, jnp.float32(0.01), config), grad)


def test_transfer_targets_are_other_classes():
  labels = jnp.arange(1000) % 7
  targets = sli.transfer_targets(jax.random.key(0), labels, 7)
  assert bool(jnp.all(targets != labels)) and bool(jnp.all((targets >= 0) & (targets < 7)))
  assert len(set(np.asarray((targets - labels) % 7).tolist())) == 6


def test_steps_are_short_and_padding_never_moves(random_model):
  apply_fn, params = random_model
  sharp = lambda p, b: 1e4 * apply_fn(p, b)  # large gradients: the clip bounds the steps
  batch = _batch(3)
  config = sli.SLIConfig(steps=12)
  init = sli.recovery_init(jax.random.key(1), batch, 2, config.init_std)
  real = batch["stroke_len"] > 0
  assert (~real).any()
  np.testing.assert_array_equal(np.asarray(init)[:, :, ~real[0]][0], 0.0)
  result = sli.jit_inverter(sharp, config)(params, batch, batch["label"], init)
  locations = np.asarray(result.locations)  # [B, K, T + 1, S, 2]
  assert locations.shape == (3, 2, 13, 16, 2)
  step = np.linalg.norm(np.diff(locations, axis=2), axis=(-2, -1))  # [B, K, T]
  assert step.max() <= 0.5 + 1e-5
  assert step[:, :, 0].min() > 0.499  # the first steps are clipped to 0.5
  padding = np.broadcast_to(~real[:, None, None], locations.shape[:-1])
  np.testing.assert_array_equal(locations[padding], 0.0)
  np.testing.assert_array_equal(locations[:, :, 0], init)


def test_batched_inversion_equals_one_sketch_at_a_time(random_model):
  apply_fn, params = random_model
  batch = _batch(3)
  config = sli.SLIConfig(steps=8)
  init = sli.recovery_init(jax.random.key(2), batch, 2, config.init_std)
  targets = jnp.array([[1, 2], [3, 4], [5, 6]])
  inverter = sli.jit_inverter(apply_fn, config)
  together = inverter(params, batch, targets, init)
  for b in range(3):
    alone = inverter(params, {k: v[b:b + 1] for k, v in batch.items()}, targets[b:b + 1],
                     init[b:b + 1])
    for name, x, y in zip(sli.SLIResult._fields, together, alone):
      np.testing.assert_allclose(x[b:b + 1], y, atol=2e-5, err_msg=name)


def test_summary_means_over_paths_and_best_path():
  per_path = {"success": np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]),
              "target_prob": np.array([[0.9, 0.2], [0.1, 0.3], [0.6, 0.7]])}
  summary = sli.summarize(per_path, np.array([1.0, 1.0, 0.0]))
  assert summary["sketches"] == 2.0 and summary["paths"] == 2
  assert summary["success_mean_over_paths"] == pytest.approx(0.25)
  assert summary["success_best_of_paths"] == pytest.approx(0.5)
  assert summary["target_prob_best_of_paths"] == pytest.approx(0.6)


@pytest.fixture(scope="module")
def trained_model():
  """A tiny masked SketchXAINet trained 40 Adam steps on procedural sketches."""
  model = sketchxainet.SketchXAINet(12, hidden=32, num_layers=2, num_heads=2, mlp_dim=64,
                                    max_strokes=16, mask_padding=True, dropout=0.0,
                                    attention_dropout=0.0)
  apply_fn = lambda p, b: model.apply({"params": p}, b, train=False)[0]
  data = _batch(384, slots=(16,))
  params = jax.jit(lambda b: model.init({"params": jax.random.key(0)}, b, train=False))(
      data)["params"]
  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(params, state, batch):
    grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        apply_fn(p, batch), batch["label"]).mean())(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = optimizer.init(params)
  for i in range(40):
    params, state = step(params, state, {k: v[i % 6 * 64:(i % 6 + 1) * 64]
                                         for k, v in data.items()})
  return apply_fn, params


def test_recovery_raises_the_target_probability(trained_model):
  apply_fn, params = trained_model
  batch = _batch(8, slots=(16,), seed=7)
  config = sli.SLIConfig(steps=20)
  init = sli.recovery_init(jax.random.key(3), batch, 2, config.init_std)
  result = sli.jit_inverter(apply_fn, config)(params, batch, batch["label"], init)
  start, end = np.asarray(result.target_prob[..., 0]), np.asarray(result.target_prob[..., -1])
  assert end.mean() > start.mean() + 0.05
  metrics = sli.path_metrics(result, batch["label"], batch, config, true_loc=batch["loc"])
  assert set(metrics) == {"success", "target_prob", "label_prob", "error", "all_within"}
  assert metrics["error"].shape == (8, 2) and metrics["error"].min() > 0
  np.testing.assert_array_equal(metrics["target_prob"], metrics["label_prob"])


@pytest.fixture(scope="module")
def smoke_workdir(tmp_path_factory):
  """A workdir of configs/quickstart.py:smoke trained 2 steps (one device, in a subprocess)."""
  workdir = tmp_path_factory.mktemp("sli") / "classifier"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  subprocess.run([sys.executable, "-m", "sketchjax.main", "--config=configs/quickstart.py:smoke",
                  f"--workdir={workdir}", "--config.train.num_steps=2",
                  "--config.train.eval_every=2", "--config.train.checkpoint_every=2"],
                 cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
  return workdir


def test_task_end_to_end_on_quickdraw_test_drawings(smoke_workdir, tmp_path, quickdraw_dir):
  from sketchjax.tasks import sli as sli_task
  config = _config_module("sli").get_config("smoke")
  with config.unlocked():
    config.checkpoint = str(smoke_workdir)
    config.data.dir = str(quickdraw_dir / "simplified")
  summary = sli_task.run(config, str(tmp_path))
  assert summary["sketches"] == 6.0 and 0.0 <= summary["success_mean_over_paths"] <= 1.0
  recognised = [row["recognised"] for row in json.loads(
      (tmp_path / "sli_recovery.json").read_text())["per_sketch"]]
  assert summary["original_top1"] == pytest.approx(np.mean(recognised))
  assert ("on_recognised" in summary) == any(recognised)
  written = json.loads((tmp_path / "sli_recovery.json").read_text())
  assert written["sli"]["steps"] == 6
  # The quickstart's classes found in QuickDraw, interleaved class by class.
  labels = [row["label"] for row in written["per_sketch"]]
  assert len(labels) == 6 and len(set(labels)) == 6
  assert all(row["targets"] == [row["label"]] * 3 for row in written["per_sketch"])
  for name in ("sli_recovery_steps.png", "sli_recovery_paths.png", "sli_recovery.gif"):
    assert (tmp_path / name).stat().st_size > 1000


def test_transfer_end_to_end_on_the_procedural_test_split(smoke_workdir, tmp_path):
  from sketchjax.tasks import sli as sli_task
  config = _config_module("sli").get_config("smoke")
  with config.unlocked():
    config.checkpoint = str(smoke_workdir)
    config.mode = "transfer"
    config.data.source = "procedural"
    config.figure.sketch = 5
  summary = sli_task.run(config, str(tmp_path))
  assert summary["sketches"] == 6.0 and "error_mean_over_paths" not in summary
  written = json.loads((tmp_path / "sli_transfer.json").read_text())
  assert [row["label"] for row in written["per_sketch"]][:3] == ["square", "triangle", "circle"]
  assert all(row["label"] not in row["targets"] for row in written["per_sketch"])
  assert (tmp_path / "sli_transfer.gif").stat().st_size > 1000


def test_results_do_not_depend_on_the_device_count(smoke_workdir, tmp_path):
  from sketchjax.tasks import sli as sli_task
  outcomes = []
  for devices in (1, 8):
    config = _config_module("sli").get_config("smoke")
    with config.unlocked():
      config.checkpoint = str(smoke_workdir)
      config.data.source = "procedural"
      config.batch_size = 8
      config.devices = devices
    sli_task.run(config, str(tmp_path / str(devices)))
    outcomes.append(json.loads((tmp_path / str(devices) / "sli_recovery.json").read_text()))
  assert len(outcomes[0]["per_sketch"]) == 6
  for one, eight in zip(outcomes[0]["per_sketch"], outcomes[1]["per_sketch"]):
    assert one["success"] == eight["success"]
    np.testing.assert_allclose(one["target_prob"], eight["target_prob"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one["error"], eight["error"], rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_by_the_devices_is_refused(smoke_workdir, tmp_path):
  from sketchjax.tasks import sli as sli_task
  config = _config_module("sli").get_config("smoke")
  with config.unlocked():
    config.checkpoint = str(smoke_workdir)
    config.data.source = "procedural"
    config.batch_size = 6
    config.devices = 4
  with pytest.raises(ValueError, match="multiple of the 4 devices"):
    sli_task.run(config, str(tmp_path))
