"""Against the students' collapse in CrossX-DFL (ours, not the paper's):
momentum key encoders (`Schedule.key_momentum`, MoCo's), in-batch negatives
(`Schedule.in_batch_negatives`, CLIP / SimCLR's) and the logged collapse
signals (`crossx_dfl.collapse_signals`). Hand-worked losses, the period update
on the tiny stand-in networks of test_dfsbir, 8 devices = 1, and exact resume
of the task with the key encoders and the queues' labels in the state."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.methods import crossx_dfl
from sketchjax.methods import dfsbir_losses as L
from sketchjax.training import mesh as mesh_lib
from test_dfsbir import _period, _resumes_exactly, _run, _setup, _teacher_flags
from test_dfsbir import teachers  # noqa: F401  (the module's fixture: two smoke teachers)
from test_dfsbir_mask import _labelled, _queues, _row_loss, _unit

M = 0.9  # key momentum of the period tests: far enough from 1 to see the keys move
CLIP = 1.0  # below the students' gradient norms (tens to hundreds at 64 px), so every period clips
STEP_FLAGS = (f"dfl.student_grad_clip={CLIP}", "dfl.student_warmup_periods=4")


def _pairs(rng, batch=3, dim=2):
  return tuple(jnp.asarray(_unit(rng.normal(size=(batch, dim))), jnp.float32) for _ in range(2))


def test_in_batch_negatives_by_hand():
  rng = np.random.default_rng(0)
  photo, sketch = _pairs(rng)
  queues = _queues(rng, keys=2)
  p, s = np.asarray(photo), np.asarray(sketch)
  sk, pk = np.asarray(queues.sketch_keys), np.asarray(queues.photo_keys)
  others = lambda x, i: np.delete(x, i, axis=0)
  # Photo query i: its sketch, then the sketch queue and the batch's other sketches.
  expected = (np.mean([_row_loss(p[i], s[i], np.concatenate([sk, others(s, i)]))
                       for i in range(3)]) +
              np.mean([_row_loss(s[i], p[i], np.concatenate([pk, others(p, i)]))
                       for i in range(3)]))
  ours = L.queue_info_nce(photo, sketch, queues, in_batch_negatives=True)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
  assert float(ours) > float(L.queue_info_nce(photo, sketch, queues)) + 0.1
  # One pair: no other pair, the paper's loss.
  np.testing.assert_allclose(
      L.queue_info_nce(photo[:1], sketch[:1], queues, in_batch_negatives=True),
      L.queue_info_nce(photo[:1], sketch[:1], queues), rtol=1e-6)


def test_in_batch_negatives_of_the_pairs_class_are_dropped_with_the_mask():
  rng = np.random.default_rng(1)
  photo, sketch = _pairs(rng)
  # Queue keys: sketch classes 0, 5; photo classes 7, 1. Pairs: photo 1, 1, 2; sketch 0, 4, 0.
  queues = _queues(rng, keys=2, sketch_labels=[0, 5], photo_labels=[7, 1])
  labels = dict(photo_labels=jnp.array([1, 1, 2]), sketch_labels=jnp.array([0, 4, 0]))
  p, s = np.asarray(photo), np.asarray(sketch)
  sk, pk = np.asarray(queues.sketch_keys), np.asarray(queues.photo_keys)
  photo_rows = [  # photo query i: sketch keys not of sketch_labels[i], in-batch sketches j != i
      _row_loss(p[0], s[0], np.stack([sk[1], s[1]])),  # drops queue key 0 and sketch 2 (class 0)
      _row_loss(p[1], s[1], np.stack([sk[0], sk[1], s[0], s[2]])),  # class 4: drops nothing
      _row_loss(p[2], s[2], np.stack([sk[1], s[1]]))]
  sketch_rows = [  # sketch query i: photo keys not of photo_labels[i]
      _row_loss(s[0], p[0], np.stack([pk[0], p[2]])),  # drops queue key 1 and photo 1 (class 1)
      _row_loss(s[1], p[1], np.stack([pk[0], p[2]])),
      _row_loss(s[2], p[2], np.stack([pk[0], pk[1], p[0], p[1]]))]
  np.testing.assert_allclose(
      L.queue_info_nce(photo, sketch, queues, in_batch_negatives=True, **labels),
      np.mean(photo_rows) + np.mean(sketch_rows), rtol=1e-4, atol=1e-5)


def test_keys_replace_the_positives_and_carry_no_gradient():
  rng = np.random.default_rng(2)
  photo, sketch = _pairs(rng)
  photo_keys, sketch_keys = _pairs(rng)
  queues = _queues(rng, keys=2)
  p, s, pk_, sk_ = map(np.asarray, (photo, sketch, photo_keys, sketch_keys))
  sk, pk = np.asarray(queues.sketch_keys), np.asarray(queues.photo_keys)
  others = lambda x, i: np.delete(x, i, axis=0)
  for in_batch in (False, True):
    extra = lambda x, i: others(x, i) if in_batch else np.zeros((0, 2))
    expected = (np.mean([_row_loss(p[i], sk_[i], np.concatenate([sk, extra(sk_, i)]))
                         for i in range(3)]) +
                np.mean([_row_loss(s[i], pk_[i], np.concatenate([pk, extra(pk_, i)]))
                         for i in range(3)]))
    loss = lambda *a: L.queue_info_nce(*a[:2], queues, photo_keys=a[2], sketch_keys=a[3],
                                       in_batch_negatives=in_batch)
    np.testing.assert_allclose(loss(photo, sketch, photo_keys, sketch_keys), expected,
                               rtol=1e-4, atol=1e-5)
    grads = jax.grad(loss, argnums=(0, 2, 3))(photo, sketch, photo_keys, sketch_keys)
    assert np.any(grads[0] != 0)
    np.testing.assert_array_equal(grads[1], 0.0)
    np.testing.assert_array_equal(grads[2], 0.0)
  # The students' own embeddings as keys: the paper's loss.
  np.testing.assert_allclose(L.queue_info_nce(photo, sketch, queues, photo_keys=photo,
                                              sketch_keys=sketch),
                             L.queue_info_nce(photo, sketch, queues), rtol=1e-6)
  with pytest.raises(ValueError, match="both photo_keys and sketch_keys"):
    L.queue_info_nce(photo, sketch, queues, photo_keys=photo)


def test_momentum_update_by_hand():
  key = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(4.0)}}
  live = {"a": jnp.array([3.0, 0.0]), "b": {"c": jnp.array(-4.0)}}
  out = crossx_dfl.momentum_update(key, live, 0.75)
  np.testing.assert_allclose(out["a"], [1.5, 1.5])
  np.testing.assert_allclose(out["b"]["c"], 2.0)


def test_collapse_signals_by_hand():
  # Three unit photos, three sketches; photo labels 0, 0, 1; sketch labels 0, 2, 2.
  photo = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
  sketch = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
  signals = crossx_dfl.collapse_signals(photo, sketch, jnp.array([0, 0, 1]), jnp.array([0, 2, 2]),
                                        jnp.array([0, 1, 2]))
  pp, ss, ps = (np.asarray(a @ b.T) for a, b in ((photo, photo), (sketch, sketch),
                                                  (photo, sketch)))
  expected = {
      "photo_cosine": np.mean([pp[0, 1], pp[0, 2], pp[1, 2]]),
      "photo_cosine_same_class": pp[0, 1],
      "photo_cosine_other_class": np.mean([pp[0, 2], pp[1, 2]]),
      "sketch_cosine_same_class": ss[1, 2],
      "sketch_cosine_other_class": np.mean([ss[0, 1], ss[0, 2]]),
      # photo i x sketch j, i != j; same class: photo 1 (class 0) x sketch 0 (class 0) only
      "cross_cosine": np.mean([ps[i, j] for i in range(3) for j in range(3) if i != j]),
      "cross_cosine_same_class": ps[1, 0],
      "cross_cosine_other_class": np.mean([ps[i, j] for i, j in
                                           ((0, 1), (0, 2), (1, 2), (2, 0), (2, 1))]),
  }
  for name, value in expected.items():
    np.testing.assert_allclose(signals[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
  # A photo class the sketch teacher does not know (-1) is of no sketch class.
  unknown = crossx_dfl.collapse_signals(photo, sketch, jnp.array([0, 0, 1]), jnp.array([0, 2, 2]),
                                        jnp.array([-1, 1, 2]))
  np.testing.assert_allclose(unknown["cross_cosine_other_class"], expected["cross_cosine"],
                             rtol=1e-6)
  assert np.isnan(unknown["cross_cosine_same_class"])  # no such pair: NaN, not 0


def _with_key_encoders(setup):
  """`setup` with key encoders that start as its students."""
  keys = jax.tree.map(jnp.copy, {"params": setup["params"]["students"],
                                 **setup["state"]["students"]})
  return {**setup, "state": {**setup["state"], "key_encoders": keys}}


def _next(setup, result):
  params, state, opt_state, _ = result
  return {**setup, "params": params, "state": state, "opt_state": opt_state}


def test_key_encoders_follow_the_students_by_momentum():
  setup = _with_key_encoders(_setup())
  first = _period(setup, key_momentum=M)
  off = _period(_setup())
  assert {"key_cosine", "photo_cosine", "cross_cosine_other_class"} <= set(first[3])
  # Period 1: the key encoders equal the students (an average of equal weights), so the
  # keys, the loss, the students and the queues are the switch-off period's.
  np.testing.assert_allclose(first[3]["key_cosine"], 1.0, rtol=1e-5)
  np.testing.assert_allclose(first[3]["loss"], off[3]["loss"], rtol=1e-5)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, first[0]["students"], off[0]["students"])
  jax.tree.map(close, first[1]["queues"], off[1]["queues"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               first[1]["key_encoders"]["params"], setup["params"]["students"])
  # Their BatchNorm statistics are their own, updated by their own pass.
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                       first[1]["key_encoders"]["batch_stats"],
                       setup["state"]["key_encoders"]["batch_stats"])
  assert all(jax.tree.leaves(moved))
  # Period 2: k <- M k + (1 - M) q with q the students after period 1, before their step.
  second = _period(_next(setup, first), key_momentum=M)
  expected = jax.tree.map(lambda k, q: M * k + (1 - M) * q, first[1]["key_encoders"]["params"],
                          first[0]["students"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               second[1]["key_encoders"]["params"], expected)
  assert float(second[3]["key_cosine"]) < 1.0 - 1e-4
  off_second = _period(_next(_setup(), off))
  assert abs(float(second[3]["loss"] - off_second[3]["loss"])) > 1e-4
  # The queues receive the key encoders' embeddings (period 2's at slots 8-15), not the
  # students'.
  assert not np.allclose(second[1]["queues"].sketch_keys[8:],
                         off_second[1]["queues"].sketch_keys[8:])


def test_in_batch_period_and_both_switches_train_the_students():
  setup = _setup()
  off = _period(setup)
  for switches, state in (({"in_batch_negatives": True}, setup),
                          ({"in_batch_negatives": True, "key_momentum": M},
                           _with_key_encoders(setup)),
                          ({"in_batch_negatives": True, "mask_same_class_negatives": True},
                           _labelled(setup, np.arange(16) % 3))):
    params, new_state, _, metrics = _period(state, **switches)
    # More negatives in the softmax: a larger loss than the same switches' without them.
    without = _period(state, **{k: v for k, v in switches.items() if k != "in_batch_negatives"})
    assert np.isfinite(metrics["loss"]) and float(metrics["loss"]) > float(without[3]["loss"])
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params["students"],
                         setup["params"]["students"])
    assert all(jax.tree.leaves(moved)), switches
    assert ("key_encoders" in new_state) == ("key_momentum" in switches)
    # The estimators' step comes first and never sees the students' loss.
    jax.tree.map(np.testing.assert_array_equal, params["estimators"], off[0]["estimators"])


def test_the_switches_refuse_bad_settings():
  setup = _setup()
  with pytest.raises(ValueError, match="key_momentum applies to InfoNCE"):
    _period(_with_key_encoders(setup), key_momentum=M, metric="proxy_anchor")
  with pytest.raises(ValueError, match="in_batch_negatives applies to InfoNCE"):
    _period(setup, in_batch_negatives=True, metric="proxy_anchor")
  with pytest.raises(ValueError, match=r"in \[0, 1\)"):
    _period(_with_key_encoders(setup), key_momentum=1.0)
  with pytest.raises(ValueError, match="needs model_state\\['key_encoders'\\]"):
    _period(setup, key_momentum=M)
  with pytest.raises(ValueError, match="key encoders given: True"):
    _period(_with_key_encoders(setup))


def test_both_switches_on_eight_devices_equal_one():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  setup = _with_key_encoders(_setup())
  switches = dict(key_momentum=M, in_batch_negatives=True)
  one = _period(_next(setup, _period(setup, **switches)), **switches)  # keys differ at period 2
  eight = _period(_next(setup, _period(setup, mesh_lib.make_mesh(), **switches)),
                  mesh_lib.make_mesh(), **switches)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               jax.device_get(one[:2]), jax.device_get(eight[:2]))


def test_config_switches_default_to_the_papers_infonce():
  from sketchjax.tasks import dfsbir_config
  dfl = dfsbir_config.base_config().dfl
  assert dfl.key_momentum == 0.0 and dfl.in_batch_negatives is False
  schedule = crossx_dfl.Schedule(estimator_steps=1, batch_size=2, latent_dim=2)
  assert schedule.key_momentum == 0.0 and schedule.in_batch_negatives is False


def test_contrastive_switches_resume_exactly(teachers, tmp_path):  # noqa: F811
  """The students' switches (ours) through the task in one run:
  dfl.mask_same_class_negatives, dfl.key_momentum and dfl.in_batch_negatives, with
  the students' step of test_dfsbir_students (dfl.student_grad_clip, small enough to
  clip, and dfl.student_warmup_periods=4: the resumed periods 3-4 are one in the
  warm-up and one after it). The queues' labels and the key encoders are in the
  checkpoint and resume with everything else; the warm-up's step count is the
  optimiser's. (The projection heads and class positives do not combine with these:
  heads are refused with key_momentum, class positives with the mask; they resume in
  test_heads_and_class_positives_resume_exactly.)"""
  flags = (*_teacher_flags(teachers), "dfl.mask_same_class_negatives=True",
           "dfl.key_momentum=0.9", "dfl.in_batch_negatives=True", *STEP_FLAGS)
  _run(tmp_path / "dfl", *flags)
  rows = [json.loads(l) for l in (tmp_path / "dfl" / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  last = train[-1]
  assert 0.0 < last["key_cosine"] <= 1.0 + 1e-5 and np.isfinite(last["photo_cosine"])
  assert 0.0 <= last["masked_negatives"] <= 1.0
  assert all(r["grad_norm"] > CLIP for r in train), [r["grad_norm"] for r in train]  # it clips
  final = _resumes_exactly(tmp_path / "dfl", tmp_path / "resumed", *flags)
  leaves = {jax.tree_util.keystr(p): leaf
            for p, leaf in jax.tree_util.tree_leaves_with_path(final)}
  assert any("key_encoders" in p for p in leaves), list(leaves)[:10]
  labels = [leaf for p, leaf in leaves.items() if "labels" in p]
  assert len(labels) == 2, [p for p in leaves if "labels" in p]
  for leaf in labels:  # 4 periods of 8 pairs through 16 slots: every key a class's
    assert leaf.shape == (16,) and np.all((leaf >= 0) & (leaf < 5))


def test_heads_and_class_positives_resume_exactly(teachers, tmp_path):  # noqa: F811
  """h22's combination (ours) through the task: MLP projection heads
  (students.projection_dim / projection_hidden), dfl.class_positives and the
  students' step (clip, warm-up). The heads are params["heads"] with their own
  optimiser group (SGD momentum, the students' warmed-up cosine), the queues are of
  the heads' width with labels; all of it is in the checkpoint and resumes
  exactly."""
  flags = (*_teacher_flags(teachers), "students.projection_dim=8",
           "students.projection_hidden=16", "dfl.class_positives=True", *STEP_FLAGS)
  _run(tmp_path / "dfl", *flags)
  rows = [json.loads(l) for l in (tmp_path / "dfl" / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert all(r["grad_norm"] > CLIP for r in train), [r["grad_norm"] for r in train]
  assert np.isfinite(train[-1]["head_grad_norm"]) and train[-1]["positives_per_query"] >= 1.0
  final = _resumes_exactly(tmp_path / "dfl", tmp_path / "resumed", *flags)
  leaves = {jax.tree_util.keystr(p): np.asarray(leaf)
            for p, leaf in jax.tree_util.tree_leaves_with_path(final)}
  heads = [p for p in leaves if "'heads'" in p]
  # params and the heads' optimiser group (momentum), 2 modalities x 2 layers x (kernel, bias)
  assert len([p for p in heads if "kernel" in p]) == 2 * 2 * 2, heads
  assert all(np.any(leaves[p] != 0) for p in heads if "kernel" in p), heads
  keys = [leaf for p, leaf in leaves.items() if "keys" in p]
  assert keys and all(leaf.shape == (16, 8) for leaf in keys), [l.shape for l in keys]
  labels = [leaf for p, leaf in leaves.items() if "labels" in p]
  assert len(labels) == 2 and all(np.all((l >= 0) & (l < 5)) for l in labels)
