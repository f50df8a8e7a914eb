"""Class-conditional estimators for CrossX-DFL (ours, against the class
collapse): the estimator's class input, the balanced targets, L_oh to the
assigned class (and its gradient), the switch off = the paper's path, the
period update on the tiny stand-in networks of test_dfsbir, and a smoke run of
the task."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sketchjax.methods import crossx_dfl
from sketchjax.methods import dfsbir_losses as L
from sketchjax.models import dcgan
from sketchjax.tasks import dfsbir
from sketchjax.training import mesh as mesh_lib
from test_dfsbir import BATCH, CLASSES, LATENT, SIZE, _config, _period, _setup


def test_conditional_estimator_adds_a_class_embedding_to_the_noise():
  plain = dcgan.Estimator(latent_dim=LATENT, width=4, output_size=SIZE)
  conditional = dataclasses.replace(plain, num_classes=CLASSES)
  noise = jax.random.normal(jax.random.key(0), (5, LATENT))
  labels = jnp.array([0, 1, 2, 2, 0])
  variables = conditional.init(jax.random.key(1), noise, labels)
  embedding = variables["params"]["class_embedding"]["embedding"]
  assert embedding.shape == (CLASSES, LATENT)
  assert 0.5 < float(jnp.std(embedding)) < 2.0  # N(0, 1): weighs like the noise
  out = conditional.apply(variables, noise, labels)
  assert out.shape == (5, SIZE, SIZE, 3) and float(jnp.abs(out).max()) <= 1.0
  # The rest of the network is the unconditional one, fed noise + embedding[label].
  rest = {"params": {k: v for k, v in variables["params"].items() if k != "class_embedding"},
          "batch_stats": variables["batch_stats"]}
  assert jax.tree.structure(rest) == jax.tree.structure(plain.init(jax.random.key(1), noise))
  np.testing.assert_allclose(out, plain.apply(rest, noise + embedding[labels]), atol=1e-6)
  assert not np.allclose(out, plain.apply(rest, noise), atol=1e-3)
  with pytest.raises(ValueError, match="needs labels"):
    conditional.apply(variables, noise)
  with pytest.raises(ValueError, match="needs labels"):
    conditional.apply(variables, noise, labels[:3])
  with pytest.raises(ValueError, match="unconditional"):
    plain.apply(rest, noise, labels)


def test_switch_off_keeps_the_official_estimator_and_generate():
  plain = dcgan.Estimator(latent_dim=LATENT, width=4, output_size=SIZE)
  variables = plain.init(jax.random.key(2), jnp.zeros((1, LATENT)))
  assert "class_embedding" not in variables["params"]
  noise = jax.random.normal(jax.random.key(3), (4, LATENT))
  params = {m: variables["params"] for m in ("photo", "sketch")}
  state = {m: {"batch_stats": variables["batch_stats"]} for m in ("photo", "sketch")}
  (photos, _), _ = dfsbir.generate_fn(plain)(params, state, noise)
  expected, _ = plain.apply(variables, noise, train=True, mutable=["batch_stats"])
  np.testing.assert_array_equal(photos, expected)


def test_balanced_targets_cover_every_class_evenly():
  targets = np.asarray(crossx_dfl.balanced_targets(jax.random.key(0), 16, 5))
  counts = np.bincount(targets, minlength=5)
  assert counts.sum() == 16 and counts.min() == 3 and counts.max() == 4
  other = np.asarray(crossx_dfl.balanced_targets(jax.random.key(1), 16, 5))
  assert not np.array_equal(targets, other)
  np.testing.assert_array_equal(np.sort(targets), np.sort(other))


def test_sketch_targets_follow_the_shared_classes():
  teachers = crossx_dfl.Teachers(None, None, None, None, None,
                                 shared_photo=jnp.array([0, 2]), shared_sketch=jnp.array([1, 0]))
  sketch_logits = jnp.array([[0.0, 0.0, 5.0]] * 3)  # argmax 2, the fallback
  out = crossx_dfl.sketch_targets(teachers, jnp.array([0, 1, 2]), 3, sketch_logits)
  np.testing.assert_array_equal(out, [1, 2, 0])  # photo 1 unknown to the sketch teacher


def _conditional_setup():
  setup = _setup()
  estimator = dcgan.Estimator(latent_dim=LATENT, width=4, output_size=SIZE, num_classes=CLASSES)
  keys = jax.random.split(jax.random.key(7))
  inputs = (jnp.zeros((1, LATENT)), jnp.zeros(1, jnp.int32))
  est = {m: estimator.init(k, *inputs) for m, k in zip(("photo", "sketch"), keys)}
  setup["params"] = {**setup["params"], "estimators": {m: v["params"] for m, v in est.items()}}
  setup["state"] = {**setup["state"],
                    "estimators": {m: {"batch_stats": v["batch_stats"]} for m, v in est.items()}}
  tx = crossx_dfl.two_group_optimizer(setup["optimizers"])
  setup["opt_state"] = tx.init(setup["params"])
  setup["generate"] = dfsbir.generate_fn(estimator)
  return setup


def _one_hot_only(setup, targets, noise):
  student_variables = {"params": setup["params"]["students"], **setup["state"]["students"]}
  weights = crossx_dfl.Weights(one_hot=1.0, info_entropy=0.0, activation=0.0, modality=0.0,
                               alignment=0.0, adversarial=0.0)
  return lambda params: crossx_dfl.estimator_loss(
      params, setup["state"]["estimators"], generate=setup["generate"], noise=noise,
      teachers=setup["teachers"], students=setup["students"],
      student_variables=student_variables, constants=setup["constants"], weights=weights,
      targets=targets)


def _target_log_probability(setup, params, targets, noise):
  (photos, sketches), _ = setup["generate"](params, setup["state"]["estimators"], noise, targets)
  total = 0.0
  for teacher, images in ((setup["teachers"].photo, photos), (setup["teachers"].sketch, sketches)):
    log_p = jax.nn.log_softmax(teacher(setup["constants"], images)[0], -1)
    total += float(jnp.mean(jnp.take_along_axis(log_p, targets[:, None], -1)))
  return total


def test_one_hot_loss_is_the_cross_entropy_to_the_assigned_class_and_its_gradient_reaches_it():
  setup = _conditional_setup()
  noise = jax.random.normal(jax.random.key(4), (BATCH, LATENT))
  targets = crossx_dfl.balanced_targets(jax.random.key(5), BATCH, CLASSES)
  loss_fn = _one_hot_only(setup, targets, noise)
  params = setup["params"]["estimators"]
  loss, (terms, _, (photos, sketches, photo_labels, _)) = loss_fn(params)
  photo_logits = setup["teachers"].photo(setup["constants"], photos)[0]
  sketch_logits = setup["teachers"].sketch(setup["constants"], sketches)[0]
  np.testing.assert_allclose(terms["one_hot"], L.class_target_loss(photo_logits, targets) +
                             L.class_target_loss(sketch_logits, targets), rtol=1e-6)
  np.testing.assert_array_equal(photo_labels, jnp.argmax(photo_logits, -1))  # still argmax
  assert not np.array_equal(photo_labels, targets)  # so the test can fail
  own = float(L.one_hot_loss(photo_logits) + L.one_hot_loss(sketch_logits))
  assert abs(float(loss) - own) > 1e-3  # not the paper's L_oh
  grads = jax.grad(lambda p: loss_fn(p)[0])(params)
  for modality in ("photo", "sketch"):
    assert float(jnp.abs(grads[modality]["class_embedding"]["embedding"]).sum()) > 0
  before = _target_log_probability(setup, params, targets, noise)
  stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
  after = _target_log_probability(setup, stepped, targets, noise)
  assert after > before + 1e-3, (before, after)
  # Other targets, other gradient: the class steers it.
  other = (targets + 1) % CLASSES
  other_grads = jax.grad(lambda p: _one_hot_only(setup, other, noise)(p)[0])(params)
  assert optax.tree.norm(jax.tree.map(jnp.subtract, grads, other_grads)) > 1e-4


def test_switch_off_gives_the_papers_one_hot_loss():
  setup = _setup()
  noise = jax.random.normal(jax.random.key(4), (BATCH, LATENT))
  loss_fn = _one_hot_only(setup, None, noise)
  loss, (terms, _, (photos, sketches, _, _)) = loss_fn(setup["params"]["estimators"])
  photo_logits = setup["teachers"].photo(setup["constants"], photos)[0]
  sketch_logits = setup["teachers"].sketch(setup["constants"], sketches)[0]
  np.testing.assert_allclose(loss, L.one_hot_loss(photo_logits) + L.one_hot_loss(sketch_logits),
                             rtol=1e-6)
  # The default schedule is the paper's (3-argument generate, never given targets).
  default = crossx_dfl.Schedule(estimator_steps=1, batch_size=2, latent_dim=2)
  assert default.conditional_classes == 0


def test_conditional_period_trains_the_class_embedding_and_logs_target_hits():
  setup = _conditional_setup()
  params, _, _, metrics = _period(setup, conditional_classes=CLASSES)
  for modality in ("photo", "sketch"):
    before = setup["params"]["estimators"][modality]["class_embedding"]["embedding"]
    assert np.any(params["estimators"][modality]["class_embedding"]["embedding"] != before)
  for name in ("photo_target_hit", "sketch_target_hit", "teacher_label_agreement"):
    assert 0.0 <= float(metrics[name]) <= 1.0, name
  assert np.isfinite(metrics["L_one_hot"]) and np.isfinite(metrics["loss"])
  with pytest.raises(ValueError, match="needs the DCGAN"):
    _period(setup, conditional_classes=CLASSES, estimator="gaussian")


def test_conditional_period_on_eight_devices_equals_one():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  setup = _conditional_setup()
  one = _period(setup, conditional_classes=CLASSES)
  eight = _period(setup, mesh_lib.make_mesh(), conditional_classes=CLASSES)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               jax.device_get(one[:2]), jax.device_get(eight[:2]))


def test_period_without_the_switch_logs_no_target_hits():
  _, _, _, metrics = _period(_setup())
  assert "photo_target_hit" not in metrics


def test_conditional_run_on_the_real_subset_with_external_teachers(tmp_path):
  """The task end to end (smoke sizes, ImageNet MobileNetV2 and doodleNet as
  teachers, so no teacher is trained here): the class embedding is in the
  checkpointed estimators, the target hits are logged, the figures drawn."""
  config = _config("smoke,external")
  config.teachers.imagenet_size = 32
  config.dfl.class_conditional = True
  metrics = dfsbir.run(config, str(tmp_path))
  assert 0.0 < metrics["map_all"] <= 1.0
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"][-1]
  assert 0.0 <= train["photo_target_hit"] <= 1.0 and 0.0 <= train["sketch_target_hit"] <= 1.0
  assert (tmp_path / "reconstructions.png").stat().st_size > 5000
