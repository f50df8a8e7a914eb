"""InfoNCE without same-class negatives for CrossX-DFL (ours,
`Schedule.mask_same_class_negatives`): labelled queues (labels written with
the keys, -1 for the random start, the official queue's rule kept), the
masked loss against a hand-worked one, and the period update on the tiny
stand-in networks of test_dfsbir with the switch on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.methods import crossx_dfl
from sketchjax.methods import dfsbir_losses as L
from sketchjax.training import mesh as mesh_lib
from test_dfsbir import BATCH, CLASSES, _period, _setup

T = 0.07


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _row_loss(query, positive, negatives):
  """-log softmax of the positive among [positive, negatives], by hand (numpy)."""
  logits = np.concatenate([[query @ positive], negatives @ query]) / T
  return -logits[0] + np.log(np.sum(np.exp(logits)))


def _queues(rng, keys=3, dim=2, sketch_labels=None, photo_labels=None):
  sketch, photo = (jnp.asarray(_unit(rng.normal(size=(keys, dim))), jnp.float32)
                   for _ in range(2))
  labels = lambda x: None if x is None else jnp.asarray(x, jnp.int32)
  return L.Queues(sketch, photo, jnp.zeros((), jnp.int32), labels(sketch_labels),
                  labels(photo_labels))


def test_masked_info_nce_by_hand():
  rng = np.random.default_rng(0)
  photo = jnp.asarray(_unit(rng.normal(size=(2, 2))), jnp.float32)
  sketch = jnp.asarray(_unit(rng.normal(size=(2, 2))), jnp.float32)
  # Sketch keys of sketch classes 1, 0, -1 (a random start key); photo keys of photo
  # classes 2, 2, 0. Pair 0: photo class 2, sketch class 1; pair 1: photo 0, sketch 0.
  queues = _queues(rng, sketch_labels=[1, 0, -1], photo_labels=[2, 2, 0])
  photo_labels, sketch_labels = jnp.array([2, 0]), jnp.array([1, 0])
  sk, pk = np.asarray(queues.sketch_keys), np.asarray(queues.photo_keys)
  p, s = np.asarray(photo), np.asarray(sketch)
  expected = (
      # photo queries against sketch keys: pair 0 drops key 0 (class 1), pair 1 key 1 (class 0)
      (_row_loss(p[0], s[0], sk[[1, 2]]) + _row_loss(p[1], s[1], sk[[0, 2]])) / 2 +
      # sketch queries against photo keys: pair 0 drops keys 0, 1 (class 2), pair 1 key 2
      (_row_loss(s[0], p[0], pk[[2]]) + _row_loss(s[1], p[1], pk[[0, 1]])) / 2)
  masked = L.queue_info_nce(photo, sketch, queues, photo_labels=photo_labels,
                            sketch_labels=sketch_labels)
  np.testing.assert_allclose(masked, expected, rtol=1e-4, atol=1e-5)
  # Unmasked (no labels given), the same queues give the paper's loss: every key counts.
  unmasked = L.queue_info_nce(photo, sketch, queues)
  everything = ((_row_loss(p[0], s[0], sk) + _row_loss(p[1], s[1], sk)) / 2 +
                (_row_loss(s[0], p[0], pk) + _row_loss(s[1], p[1], pk)) / 2)
  np.testing.assert_allclose(unmasked, everything, rtol=1e-4, atol=1e-5)
  assert abs(float(masked) - float(unmasked)) > 1e-3


def test_a_masked_key_changes_nothing_and_an_unmasked_one_does():
  photo, sketch = jnp.array([[1.0, 0.0, 0.0]]), jnp.array([[0.8, 0.6, 0.0]])
  others = jnp.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # classes 4 and 5
  base = L.Queues(others, others, jnp.zeros((), jnp.int32), jnp.array([4, 5], jnp.int32),
                  jnp.array([4, 5], jnp.int32))
  labels = dict(photo_labels=jnp.array([3]), sketch_labels=jnp.array([3]))
  before = L.queue_info_nce(photo, sketch, base, **labels)
  # The pair's own keys as a third key of each queue, class 3: masked, nothing changes.
  extra = L.Queues(jnp.concatenate([others, sketch]), jnp.concatenate([others, photo]),
                   base.position, jnp.array([4, 5, 3], jnp.int32),
                   jnp.array([4, 5, 3], jnp.int32))
  np.testing.assert_allclose(L.queue_info_nce(photo, sketch, extra, **labels), before,
                             rtol=1e-6)
  # Of another class than the pair's, the same key is a negative as close as the positive.
  other = dict(photo_labels=jnp.array([7]), sketch_labels=jnp.array([7]))
  p, s, o = np.asarray(photo[0]), np.asarray(sketch[0]), np.asarray(others)
  expected = (_row_loss(p, s, np.concatenate([o, s[None]])) +
              _row_loss(s, p, np.concatenate([o, p[None]])))
  unmasked = L.queue_info_nce(photo, sketch, extra, **other)
  np.testing.assert_allclose(unmasked, expected, rtol=1e-5)
  assert float(unmasked) > float(before) + 1.0  # ln 2 a direction at least


def test_random_start_keys_are_never_masked():
  rng = np.random.default_rng(2)
  photo = jnp.asarray(_unit(rng.normal(size=(3, 4))), jnp.float32)
  sketch = jnp.asarray(_unit(rng.normal(size=(3, 4))), jnp.float32)
  queues = L.Queues.random(jax.random.key(0), 5, 4, labelled=True)
  np.testing.assert_array_equal(queues.sketch_labels, -1)
  np.testing.assert_array_equal(queues.photo_labels, -1)
  for query in ([0, 1, 2], [-1, -1, -1]):
    masks = L.same_class_negatives(queues, jnp.array(query), jnp.array(query))
    assert not np.any(masks[0]) and not np.any(masks[1])
  np.testing.assert_allclose(
      L.queue_info_nce(photo, sketch, queues, photo_labels=jnp.array([0, 1, 2]),
                       sketch_labels=jnp.array([0, 1, 2])),
      L.queue_info_nce(photo, sketch, queues), rtol=1e-6)
  # The unlabelled queues are the official ones: the same keys, no label leaves.
  plain = L.Queues.random(jax.random.key(0), 5, 4)
  assert not plain.labelled and len(jax.tree.leaves(plain)) == 3
  np.testing.assert_array_equal(plain.sketch_keys, queues.sketch_keys)
  np.testing.assert_array_equal(plain.photo_keys, queues.photo_keys)


def test_a_row_with_every_negative_masked_has_zero_loss_and_finite_gradients():
  rng = np.random.default_rng(3)
  photo = jnp.asarray(_unit(rng.normal(size=(2, 3))), jnp.float32)
  sketch = jnp.asarray(_unit(rng.normal(size=(2, 3))), jnp.float32)
  queues = _queues(rng, keys=4, dim=3, sketch_labels=[0] * 4, photo_labels=[0] * 4)
  sk, pk = np.asarray(queues.sketch_keys), np.asarray(queues.photo_keys)
  p, s = np.asarray(photo), np.asarray(sketch)
  labels = dict(photo_labels=jnp.array([0, 1]), sketch_labels=jnp.array([0, 1]))
  loss_fn = lambda p_, s_: L.queue_info_nce(p_, s_, queues, **labels)
  # Row 0 keeps only its positive (loss 0); row 1 is of another class, keeps every key.
  expected = (_row_loss(p[1], s[1], sk) + _row_loss(s[1], p[1], pk)) / 2
  np.testing.assert_allclose(loss_fn(photo, sketch), expected, rtol=1e-4, atol=1e-5)
  grads = jax.grad(loss_fn, argnums=(0, 1))(photo, sketch)
  assert all(np.all(np.isfinite(g)) for g in grads)
  np.testing.assert_allclose(grads[0][0], 0.0, atol=1e-7)  # row 0: no negative, no gradient
  assert np.any(grads[0][1] != 0)
  # Every row masked: 0, and gradients 0, not NaN.
  everything = dict(photo_labels=jnp.array([0, 0]), sketch_labels=jnp.array([0, 0]))
  assert float(L.queue_info_nce(photo, sketch, queues, **everything)) == 0.0
  grads = jax.grad(lambda x: L.queue_info_nce(x, sketch, queues, **everything))(photo)
  np.testing.assert_allclose(grads, 0.0, atol=1e-7)


def test_labelled_push_writes_labels_at_the_keys_slots():
  queues = L.Queues.random(jax.random.key(0), 5, 3, labelled=True)
  keys = jnp.arange(12.0).reshape(4, 3)
  pushed = queues.push(keys, -keys, sketch_labels=jnp.array([10, 11, 12, 13]),
                       photo_labels=jnp.array([20, 21, 22, 23]))
  pushed = pushed.push(keys[:2] + 100, keys[:2], sketch_labels=jnp.array([30, 31]),
                       photo_labels=jnp.array([40, 41]))
  np.testing.assert_array_equal(pushed.sketch_labels, [31, 11, 12, 13, 30])  # wrapped at 4, 0
  np.testing.assert_array_equal(pushed.photo_labels, [41, 21, 22, 23, 40])
  np.testing.assert_array_equal(pushed.sketch_keys[np.array([4, 0])], keys[:2] + 100)
  assert int(pushed.position) == 1 and pushed.sketch_labels.dtype == jnp.int32
  # More rows than slots: the last K rows, as the keys.
  big = queues.push(jnp.ones((7, 3)), jnp.ones((7, 3)), sketch_labels=jnp.arange(7),
                    photo_labels=jnp.arange(7) + 50)
  np.testing.assert_array_equal(big.sketch_labels, [2, 3, 4, 5, 6])
  np.testing.assert_array_equal(big.photo_labels, [52, 53, 54, 55, 56])
  with pytest.raises(ValueError, match="labelled queues need both"):
    queues.push(keys, keys)
  with pytest.raises(ValueError, match="labelled queues need both"):
    queues.push(keys, keys, sketch_labels=jnp.zeros(4, jnp.int32))
  with pytest.raises(ValueError, match="labelled=False"):
    L.Queues.random(jax.random.key(0), 5, 3).push(keys, keys, sketch_labels=jnp.zeros(4),
                                                  photo_labels=jnp.zeros(4))
  with pytest.raises(ValueError, match="need labelled queues"):
    L.same_class_negatives(L.Queues.random(jax.random.key(0), 5, 3), jnp.zeros(1),
                           jnp.zeros(1))


def test_labelled_official_queue_still_never_moves_at_512_and_128():
  big = L.Queues.random(jax.random.key(1), 128, 3, labelled=True)
  labels = dict(sketch_labels=jnp.ones(512, jnp.int32), photo_labels=jnp.ones(512, jnp.int32))
  same = big.push(jnp.ones((512, 3)), jnp.ones((512, 3)), official=True, **labels)
  jax.tree.map(np.testing.assert_array_equal, same, big)
  labels = dict(sketch_labels=jnp.full(64, 3), photo_labels=jnp.full(64, 4))
  moved = big.push(jnp.ones((64, 3)), jnp.ones((64, 3)), official=True, **labels)
  assert int(moved.position) == 64
  np.testing.assert_array_equal(moved.sketch_labels[:64], 3)
  np.testing.assert_array_equal(moved.photo_labels[:64], 4)
  np.testing.assert_array_equal(moved.sketch_labels[64:], -1)


def _labelled(setup, labels=None):
  """`setup` with its queues labelled: -1 (the start), or `labels` [16] for both."""
  queues = setup["state"]["queues"]
  size = queues.sketch_keys.shape[0]
  labels = jnp.full(size, -1, jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)
  return {**setup, "state": {**setup["state"], "queues": L.Queues(
      queues.sketch_keys, queues.photo_keys, queues.position, labels, labels)}}


def test_period_with_the_switch_masks_the_queue_and_pushes_the_pairs_labels():
  setup = _setup()
  params, state, _, metrics = _period(_labelled(setup), mask_same_class_negatives=True)
  queues = state["queues"]
  assert int(queues.position) == BATCH
  for labels in (queues.sketch_labels, queues.photo_labels):
    assert np.all((labels[:BATCH] >= 0) & (labels[:BATCH] < CLASSES))
    np.testing.assert_array_equal(labels[BATCH:], -1)
  assert float(metrics["masked_negatives"]) == 0.0  # only random keys in the queue yet
  off = _period(setup)
  np.testing.assert_allclose(metrics["loss"], off[3]["loss"], rtol=1e-6)
  # A queue of classes 0, 1, 2: some of its keys are the pairs' classes and leave the loss.
  filled = _labelled(setup, np.arange(16) % CLASSES)
  params, state, _, metrics = _period(filled, mask_same_class_negatives=True)
  assert 0.0 < float(metrics["masked_negatives"]) < 1.0
  assert np.isfinite(metrics["loss"]) and abs(float(metrics["loss"] - off[3]["loss"])) > 1e-3
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params["students"],
                       setup["params"]["students"])
  assert all(jax.tree.leaves(moved))
  # The estimators' step comes first and never sees the queues: the same as with it off.
  jax.tree.map(np.testing.assert_array_equal, params["estimators"], off[0]["estimators"])


def test_the_switch_refuses_other_students_and_unlabelled_queues():
  setup = _setup()
  with pytest.raises(ValueError, match="InfoNCE students"):
    _period(_labelled(setup), mask_same_class_negatives=True, metric="proxy_anchor")
  with pytest.raises(ValueError, match="need labelled queues"):
    _period(setup, mask_same_class_negatives=True)
  with pytest.raises(ValueError, match="labelled=True"):
    _period(_labelled(setup))  # labelled queues, switch off: push refuses to drop labels


def test_masked_period_on_eight_devices_equals_one():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  setup = _labelled(_setup(), np.arange(16) % CLASSES)
  one = _period(setup, mask_same_class_negatives=True)
  eight = _period(setup, mesh_lib.make_mesh(), mask_same_class_negatives=True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               jax.device_get(one[:2]), jax.device_get(eight[:2]))


def test_config_switch_defaults_to_the_papers_infonce():
  from sketchjax.tasks import dfsbir_config
  assert dfsbir_config.base_config().dfl.mask_same_class_negatives is False
  assert crossx_dfl.Schedule(estimator_steps=1, batch_size=2,
                             latent_dim=2).mask_same_class_negatives is False
