"""Against the students' collapse in CrossX-DFL, three switches (ours, not the
paper's): class positives (`Schedule.class_positives`, supervised contrastive),
projection heads for the contrastive loss only (`params["heads"]`,
`crossx_dfl.projection_heads`) and the students' step (`Schedule.student_grad_clip`,
`dfsbir.student_schedule`'s warm-up). Hand-worked losses and the period update on
the tiny stand-in networks of test_dfsbir; every test runs in seconds."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from sketchjax.methods import crossx_dfl
from sketchjax.methods import dfsbir_losses as L
from test_dfsbir import BATCH, CLASSES, _period, _setup
from test_dfsbir_mask import T, _labelled, _queues, _row_loss, _unit


def _pairs(rng, batch=3, dim=2):
  return tuple(jnp.asarray(_unit(rng.normal(size=(batch, dim))), jnp.float32) for _ in range(2))


def _supcon_row(query, keys, positive):
  """Mean over the positives of -log softmax among `keys` (numpy, by hand)."""
  logits = keys @ query / T
  log_prob = logits - np.log(np.sum(np.exp(logits)))
  return -np.mean(log_prob[positive])


# --- class positives -------------------------------------------------------------------


def test_class_positives_by_hand():
  rng = np.random.default_rng(0)
  photo, sketch = _pairs(rng)
  # Queue: sketch keys of sketch classes 0, 5, -1; photo keys of photo classes 1, 7, 1.
  # Pairs: photo labels 1, 2, 1; sketch labels 0, 4, 0.
  queues = _queues(rng, keys=3, sketch_labels=[0, 5, -1], photo_labels=[1, 7, 1])
  labels = dict(photo_labels=jnp.array([1, 2, 1]), sketch_labels=jnp.array([0, 4, 0]))
  p, s = np.asarray(photo), np.asarray(sketch)
  sk, pk = np.asarray(queues.sketch_keys), np.asarray(queues.photo_keys)
  for in_batch in (False, True):
    # Photo query i: its sketch, the sketch queue, then the batch's other sketches (the
    # same-class ones always; the others only as in-batch negatives).
    photo_rows = [
        # class 0: queue key 0 and sketch 2 are positives
        _supcon_row(p[0], np.stack([s[0], *sk, s[2], *([s[1]] if in_batch else [])]),
                    [0, 1, 4]),
        # class 4: only its own sketch
        _supcon_row(p[1], np.stack([s[1], *sk, *([s[0], s[2]] if in_batch else [])]), [0]),
        _supcon_row(p[2], np.stack([s[2], *sk, s[0], *([s[1]] if in_batch else [])]),
                    [0, 1, 4])]
    sketch_rows = [  # sketch query i: photo keys of photo_labels[i]
        _supcon_row(s[0], np.stack([p[0], *pk, p[2], *([p[1]] if in_batch else [])]),
                    [0, 1, 3, 4]),
        _supcon_row(s[1], np.stack([p[1], *pk, *([p[0], p[2]] if in_batch else [])]), [0]),
        _supcon_row(s[2], np.stack([p[2], *pk, p[0], *([p[1]] if in_batch else [])]),
                    [0, 1, 3, 4])]
    ours = L.queue_info_nce(photo, sketch, queues, class_positives=True,
                            in_batch_negatives=in_batch, **labels)
    np.testing.assert_allclose(ours, np.mean(photo_rows) + np.mean(sketch_rows), rtol=1e-4,
                               atol=1e-5)
  counts = L.class_positive_counts(queues, labels["photo_labels"], labels["sketch_labels"])
  np.testing.assert_allclose(counts, (np.mean([3, 1, 3]) + np.mean([4, 1, 4])) / 2)


def test_class_positives_without_a_same_class_key_are_the_papers_infonce():
  rng = np.random.default_rng(1)
  photo, sketch = _pairs(rng)
  queues = _queues(rng, keys=3, sketch_labels=[-1, -1, 9], photo_labels=[-1, 8, -1])
  labels = dict(photo_labels=jnp.array([0, 1, 2]), sketch_labels=jnp.array([0, 1, 2]))
  np.testing.assert_allclose(L.queue_info_nce(photo, sketch, queues, class_positives=True,
                                              **labels),
                             L.queue_info_nce(photo, sketch, queues), rtol=1e-5)
  np.testing.assert_allclose(
      L.queue_info_nce(photo, sketch, queues, class_positives=True, in_batch_negatives=True,
                       **labels),
      L.queue_info_nce(photo, sketch, queues, in_batch_negatives=True), rtol=1e-5)


def test_class_positives_differentiate_the_queries_only():
  rng = np.random.default_rng(2)
  photo, sketch = _pairs(rng)
  photo_keys, sketch_keys = _pairs(rng)
  queues = _queues(rng, keys=2, sketch_labels=[0, 1], photo_labels=[0, 1])
  labels = dict(photo_labels=jnp.array([0, 0, 1]), sketch_labels=jnp.array([0, 0, 1]))
  loss = lambda *a: L.queue_info_nce(*a[:2], queues, photo_keys=a[2], sketch_keys=a[3],
                                     class_positives=True, **labels)
  grads = jax.grad(loss, argnums=(0, 1, 2, 3))(photo, sketch, photo_keys, sketch_keys)
  assert np.any(grads[0] != 0) and np.any(grads[1] != 0)
  np.testing.assert_array_equal(grads[2], 0.0)
  np.testing.assert_array_equal(grads[3], 0.0)
  with pytest.raises(ValueError, match="class_positives needs photo_labels"):
    L.queue_info_nce(photo, sketch, queues, class_positives=True)


def test_period_with_class_positives_pushes_labels_and_logs_positives():
  setup = _labelled(_setup())
  off = _period(_setup())  # the same keys, unlabelled: the paper's InfoNCE
  params, state, _, metrics = _period(setup, class_positives=True)
  assert 1.0 <= float(metrics["positives_per_query"]) <= 1 + 16 + BATCH
  assert np.isfinite(metrics["loss"])
  assert abs(float(metrics["loss"] - off[3]["loss"])) > 1e-4
  for labels in (state["queues"].sketch_labels, state["queues"].photo_labels):
    assert np.all((labels[:BATCH] >= 0) & (labels[:BATCH] < CLASSES))
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params["students"],
                       setup["params"]["students"])
  assert all(jax.tree.leaves(moved))
  jax.tree.map(np.testing.assert_array_equal, params["estimators"], off[0]["estimators"])


# --- projection heads ------------------------------------------------------------------


def test_projection_heads_by_hand():
  heads = crossx_dfl.projection_heads(jax.random.key(0), 4, 3)
  assert [l["kernel"].shape for l in heads["photo"].values()] == [(4, 3)]
  assert not np.allclose(heads["photo"]["dense_0"]["kernel"], heads["sketch"]["dense_0"]["kernel"])
  mlp = crossx_dfl.projection_heads(jax.random.key(0), 4, 3, hidden=5)
  assert [mlp["sketch"][f"dense_{i}"]["kernel"].shape for i in (0, 1)] == [(4, 5), (5, 3)]
  x = jnp.asarray(_unit(np.random.default_rng(0).normal(size=(2, 4))), jnp.float32)
  layers = {name: {k: np.asarray(v) + 0.1 * (k == "bias") for k, v in layer.items()}
            for name, layer in mlp["photo"].items()}
  first, second = layers["dense_0"], layers["dense_1"]
  hidden = np.maximum(np.asarray(x) @ first["kernel"] + first["bias"], 0)
  expected = _unit(hidden @ second["kernel"] + second["bias"])
  np.testing.assert_allclose(crossx_dfl.apply_head(layers, x), expected, rtol=1e-5, atol=1e-6)


def _with_heads(setup, heads):
  optimizers = {**setup["optimizers"], "heads": optax.sgd(0.05, momentum=0.9)}
  params = {**setup["params"], "heads": heads}
  dim = heads["photo"][f"dense_{len(heads['photo']) - 1}"]["bias"].shape[-1]
  queues = L.Queues.random(jax.random.key(7), 16, dim)
  return {**setup, "params": params, "optimizers": optimizers,
          "state": {**setup["state"], "queues": queues},
          "opt_state": crossx_dfl.two_group_optimizer(optimizers).init(params)}


def test_identity_head_is_the_period_without_heads():
  setup = _setup()
  identity = {m: {"dense_0": {"kernel": jnp.eye(4), "bias": jnp.zeros(4)}}
              for m in ("photo", "sketch")}
  headed = _with_heads(setup, identity)
  headed["state"]["queues"] = setup["state"]["queues"]
  off = _period(setup)
  on = _period(headed)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  close(on[3]["loss"], off[3]["loss"])
  jax.tree.map(close, on[0]["students"], off[0]["students"])
  jax.tree.map(close, on[1]["queues"], off[1]["queues"])
  close(on[3]["head_photo_cosine"], off[3]["photo_cosine"])
  assert "head_grad_norm" in on[3] and "heads" in on[2]


def test_period_with_heads_trains_them_and_fills_the_queues_with_their_outputs():
  setup = _with_heads(_setup(), crossx_dfl.projection_heads(jax.random.key(1), 4, 3, hidden=32))
  params, state, opt_state, metrics = _period(setup)
  for group in ("students", "heads"):
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params[group],
                         setup["params"][group])
    assert all(jax.tree.leaves(moved)), group
  assert state["queues"].sketch_keys.shape == (16, 3)
  np.testing.assert_allclose(np.linalg.norm(state["queues"].sketch_keys[:BATCH], axis=-1), 1.0,
                             rtol=1e-5)
  for name in ("head_pair_cosine", "head_photo_cosine", "head_cross_cosine", "photo_cosine",
               "pair_cosine"):
    assert np.isfinite(metrics[name]), name
  # The backbone's signals are the students' embeddings, not the heads'.
  assert abs(float(metrics["pair_cosine"] - metrics["head_pair_cosine"])) > 1e-4
  # With the other switches: class positives and in-batch negatives.
  both = _period(_labelled(setup), class_positives=True, in_batch_negatives=True)
  assert np.isfinite(both[3]["loss"]) and both[1]["queues"].sketch_labels is not None


# --- the students' step ----------------------------------------------------------------


def test_gradient_clipping():
  setup = _setup()
  off = _period(setup)
  norm = float(off[3]["grad_norm"])
  # Above the norm: nothing changes, bit for bit.
  loose = _period(setup, student_grad_clip=norm * 2)
  jax.tree.map(np.testing.assert_array_equal, loose[0], off[0])
  # Below it: the first step (SGD momentum, empty trace) is the switch-off step scaled.
  clip = norm / 4
  tight = _period(setup, student_grad_clip=clip)
  np.testing.assert_allclose(tight[3]["grad_norm"], norm, rtol=1e-6)  # logged unclipped
  start = setup["params"]["students"]
  jax.tree.map(lambda t, o, s: np.testing.assert_allclose(t - s, (o - s) * clip / norm,
                                                          rtol=1e-3, atol=1e-7),
               tight[0]["students"], off[0]["students"], start)
  # With heads: one norm over students and heads.
  headed = _with_heads(setup, crossx_dfl.projection_heads(jax.random.key(1), 4, 3))
  free = _period(headed)
  total = float(free[3]["grad_norm"])
  clipped = _period(headed, student_grad_clip=total / 2)
  np.testing.assert_allclose(clipped[3]["head_grad_norm"], free[3]["head_grad_norm"] / 2,
                             rtol=1e-4)


def test_warmup_schedule():
  from sketchjax.tasks import dfsbir
  config = ml_collections.ConfigDict({"dfl": {"student_learning_rate": 1e-3,
                                              "student_warmup_periods": 0},
                                      "train": {"num_steps": 24}})
  cosine = optax.cosine_decay_schedule(1e-3, 24)
  off = dfsbir.student_schedule(config)
  for t in (0, 1, 5, 23):
    assert float(off(t)) == float(cosine(t))
  config.dfl.student_warmup_periods = 4
  on = dfsbir.student_schedule(config)
  for t, factor in ((0, 0.25), (1, 0.5), (2, 0.75), (3, 1.0), (10, 1.0)):
    np.testing.assert_allclose(float(on(t)), float(cosine(t)) * factor, rtol=1e-6)


# --- refusals and defaults -------------------------------------------------------------


def test_the_switches_refuse_bad_settings():
  setup = _setup()
  with pytest.raises(ValueError, match="class_positives applies to InfoNCE"):
    _period(_labelled(setup), class_positives=True, metric="proxy_anchor")
  with pytest.raises(ValueError, match="does not combine"):
    _period(_labelled(setup), class_positives=True, mask_same_class_negatives=True)
  with pytest.raises(ValueError, match="student_grad_clip must be >= 0"):
    _period(setup, student_grad_clip=-1.0)
  headed = _with_heads(setup, crossx_dfl.projection_heads(jax.random.key(1), 4, 3))
  with pytest.raises(ValueError, match="projection heads .* apply to InfoNCE"):
    _period(headed, metric="proxy_anchor")
  keys = jax.tree.map(jnp.copy, {"params": setup["params"]["students"],
                                 **setup["state"]["students"]})
  with pytest.raises(ValueError, match="key encoders have no heads"):
    _period({**headed, "state": {**headed["state"], "key_encoders": keys}}, key_momentum=0.9)


def test_config_switches_default_off():
  from sketchjax.tasks import dfsbir_config
  c = dfsbir_config.base_config()
  assert c.dfl.class_positives is False and c.dfl.student_grad_clip == 0.0
  assert c.dfl.student_warmup_periods == 0
  assert c.students.projection_dim == 0 and c.students.projection_hidden == 0
  schedule = crossx_dfl.Schedule(estimator_steps=1, batch_size=2, latent_dim=2)
  assert schedule.class_positives is False and schedule.student_grad_clip == 0.0
