"""CrossX-DFL: the estimator's geometry, every loss against a hand-worked or
naive version, the period update (frozen networks untouched, 1 = 8 devices),
and the task end to end on the real Sketchy subset with exact resume."""

import importlib.util
import json
import pathlib
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from sketchjax.methods import crossx_dfl
from sketchjax.methods import dfsbir_losses as L
from sketchjax.models import dcgan
from sketchjax.tasks import dfsbir
from sketchjax.training import mesh as mesh_lib
from conftest import SHARED_DATA, need

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_official_estimator_has_the_official_size_and_output():
  model = dcgan.Estimator()
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 1000))))
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"])) == 62_407_744
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 1000))), variables)
  assert out.shape == (2, 64, 64, 3)
  with pytest.raises(ValueError, match="4 \\* 2\\*\\*k"):
    dcgan.Estimator(output_size=48).init(jax.random.key(0), jnp.zeros((1, 1000)))


def _torch_conv_transpose(x, weight, stride, padding):
  """torch.nn.ConvTranspose2d by its definition: x [C, H, W], weight [C, O, K, K]."""
  channels, height, width = x.shape
  k = weight.shape[-1]
  full = np.zeros((weight.shape[1], (height - 1) * stride + k, (width - 1) * stride + k))
  for c in range(channels):
    for i in range(height):
      for j in range(width):
        full[:, i * stride:i * stride + k, j * stride:j * stride + k] += x[c, i, j] * weight[c]
  return full[:, padding:full.shape[1] - padding, padding:full.shape[2] - padding]


@pytest.mark.parametrize("stride,padding,pad", [(1, 0, 3), (2, 1, 2)])
def test_conv_transpose_padding_is_torchs(stride, padding, pad):
  """flax ConvTranspose with padding k-1-p equals torch's ConvTranspose2d(k, s, p)
  when the kernel is flipped (how torch weights would be ported)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 3, 2)).astype(np.float32)
  layer = nn.ConvTranspose(5, (4, 4), (stride, stride), padding=((pad, pad), (pad, pad)),
                           use_bias=False)
  variables = layer.init(jax.random.key(0), x)
  ours = np.asarray(layer.apply(variables, x))[0]
  kernel = np.asarray(variables["params"]["kernel"])  # [K, K, in, out]
  torch_weight = np.transpose(kernel[::-1, ::-1], (2, 3, 0, 1))  # [in, out, K, K]
  theirs = _torch_conv_transpose(np.transpose(x[0], (2, 0, 1)), torch_weight, stride, padding)
  np.testing.assert_allclose(ours, np.transpose(theirs, (1, 2, 0)), atol=1e-5)


def test_semantic_terms_by_hand():
  logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
  expected_ce = (np.log(1 + np.exp(-2.0)) + np.log(1 + np.exp(-1.0))) / 2
  np.testing.assert_allclose(L.one_hot_loss(logits), expected_ce, rtol=1e-6)
  np.testing.assert_allclose(L.info_entropy_loss(jnp.zeros((4, 10))), -1.0, rtol=1e-6)
  np.testing.assert_allclose(L.activation_loss(jnp.array([[1.0, -3.0]])), -2.0)
  np.testing.assert_allclose(L.modality_loss(jnp.zeros(3), jnp.zeros(3)), 2 * np.log(2),
                             rtol=1e-6)


def test_alignment_is_kl_with_the_sketch_side_stopped():
  photo, sketch = jnp.array([[1.0, 0.0, -1.0]]), jnp.array([[0.0, 2.0, 0.0]])
  q, p = jax.nn.softmax(sketch[0]), jax.nn.softmax(photo[0])
  np.testing.assert_allclose(L.alignment_loss(photo, sketch), np.sum(q * np.log(q / p)),
                             rtol=1e-5)
  assert not np.any(jax.grad(L.alignment_loss, argnums=1)(photo, sketch))
  assert np.any(jax.grad(L.alignment_loss)(photo, sketch))


def test_adversarial_is_minus_the_students_cross_entropy_under_the_teachers_classifier():
  features, kernel = jnp.array([[1.0, 0.0]]), jnp.array([[1.0, -1.0], [0.0, 0.0]])
  bias, labels = jnp.zeros(2), jnp.array([1])
  np.testing.assert_allclose(L.adversarial_loss(features, kernel, bias, labels),
                             -np.log(1 + np.exp(2.0)), rtol=1e-6)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_queues_are_a_ring_and_the_official_one_never_moves_at_512_and_128():
  queues = L.Queues.random(jax.random.key(0), 5, 3)
  np.testing.assert_allclose(np.linalg.norm(queues.sketch_keys, axis=-1), 1.0, rtol=1e-6)
  keys = jnp.arange(12.0).reshape(4, 3)
  pushed = queues.push(keys, -keys).push(keys[:2] + 100, keys[:2])
  np.testing.assert_array_equal(pushed.sketch_keys[np.array([4, 0])], keys[:2] + 100)  # wrapped
  np.testing.assert_array_equal(pushed.sketch_keys[1:4], keys[1:4])
  np.testing.assert_array_equal(pushed.photo_keys[1:4], -keys[1:4])
  assert int(pushed.position) == 1
  big = L.Queues.random(jax.random.key(1), 128, 3)
  same = big.push(jnp.ones((512, 3)), jnp.ones((512, 3)), official=True)
  np.testing.assert_array_equal(same.sketch_keys, big.sketch_keys)
  moved = big.push(jnp.ones((64, 3)), jnp.ones((64, 3)), official=True)
  assert int(moved.position) == 64 and np.all(moved.sketch_keys[:64] == 1)


def test_queue_info_nce_matches_a_naive_version():
  rng = np.random.default_rng(0)
  photo, sketch = _unit(rng.normal(size=(4, 6))), _unit(rng.normal(size=(4, 6)))
  queues = L.Queues(jnp.asarray(_unit(rng.normal(size=(7, 6)))),
                    jnp.asarray(_unit(rng.normal(size=(7, 6)))), jnp.zeros((), jnp.int32))

  def naive(query, key, negatives):
    total = 0.0
    for q, k in zip(query, key):
      logits = np.concatenate([[q @ k], negatives @ q]) / 0.07
      total += -logits[0] + np.log(np.sum(np.exp(logits)))
    return total / len(query)

  expected = (naive(photo, sketch, np.asarray(queues.sketch_keys)) +
              naive(sketch, photo, np.asarray(queues.photo_keys)))
  np.testing.assert_allclose(L.queue_info_nce(jnp.asarray(photo), jnp.asarray(sketch), queues),
                             expected, rtol=1e-4)


def test_proxy_anchor_matches_a_naive_version_and_has_finite_gradients():
  rng = np.random.default_rng(1)
  embeddings, proxies = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
  labels = np.array([0, 0, 1, 1, 3, 3])  # proxies 2 and 4 have no positive
  sim = _unit(embeddings) @ _unit(proxies).T
  pos = [np.log1p(np.sum(np.exp(-32 * (sim[labels == c, c] - 0.1)))) for c in (0, 1, 3)]
  neg = [np.log1p(np.sum(np.exp(32 * (sim[labels != c, c] + 0.1)))) for c in range(5)]
  expected = np.mean(pos) + np.mean(neg)
  args = (jnp.asarray(embeddings, jnp.float32), jnp.asarray(labels),
          jnp.asarray(proxies, jnp.float32))
  np.testing.assert_allclose(L.proxy_anchor_loss(*args), expected, rtol=1e-4)
  assert np.all(np.isfinite(jax.grad(L.proxy_anchor_loss)(*args)))


def test_official_normalization_uses_thirds_of_the_flat_buffer():
  rng = np.random.default_rng(2)
  images = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  out = np.asarray(crossx_dfl.official_normalization(jnp.asarray(images), lambda y: y))
  nchw = np.transpose(images, (0, 3, 1, 2))
  rows = nchw.reshape(3, -1)  # torch's x.view(3, -1)
  mean, std = rows.mean(1), rows.std(1, ddof=1)
  y = (nchw - mean[None, :, None, None]) / std[None, :, None, None]
  y = (y - np.array(crossx_dfl.CIFAR_MEAN)[None, :, None, None]) / np.array(
      crossx_dfl.CIFAR_STD)[None, :, None, None]
  np.testing.assert_allclose(out, np.transpose(y, (0, 2, 3, 1)), rtol=1e-4, atol=1e-5)
  per_channel = nchw.transpose(1, 0, 2, 3).reshape(3, -1).mean(1)
  assert not np.allclose(mean, per_channel)  # not per-channel statistics: the bug


def test_two_group_optimizer_leaves_the_other_groups_momentum_alone():
  optimizers = {"a": optax.sgd(0.1, momentum=0.9), "b": optax.sgd(0.1, momentum=0.9)}
  tx = crossx_dfl.two_group_optimizer(optimizers)
  params = {"a": jnp.ones(2), "b": jnp.ones(2)}
  state = tx.init(params)
  _, after_a = optimizers["a"].update(jnp.ones(2), state["a"], params["a"])
  assert np.any(jax.tree.leaves(after_a)[0] != 0)
  updates, both = tx.update({"a": jnp.ones(2), "b": jnp.zeros(2)}, state, params)
  np.testing.assert_array_equal(updates["b"], 0.0)


# --- the period update on tiny stand-in networks ----------------------------------------

CLASSES, SIZE, LATENT, BATCH = 3, 8, 6, 8


class _Classifier(nn.Module):
  classes: int

  @nn.compact
  def __call__(self, images):
    features = nn.Dense(4, name="body")(images.reshape(images.shape[0], -1))
    return nn.Dense(self.classes, name="classifier")(features), features


class _Students(nn.Module):
  @nn.compact
  def __call__(self, images, modality):
    features = nn.Dense(4, name=modality)(images.reshape(images.shape[0], -1))
    features = nn.BatchNorm(use_running_average=False, name=f"{modality}_bn")(features)
    return features / jnp.linalg.norm(features, axis=-1, keepdims=True), features


def _setup():
  estimator = dcgan.Estimator(latent_dim=LATENT, width=4, output_size=SIZE)
  images = jnp.zeros((1, SIZE, SIZE, 3))
  keys = jax.random.split(jax.random.key(0), 6)
  constants = {name: _Classifier(CLASSES if name != "modality" else 1).init(k, images)
               for name, k in zip(("photo", "sketch", "modality"), keys)}

  def frozen(name):
    return lambda c, x: _Classifier(CLASSES if name != "modality" else 1).apply(c[name], x)

  proxies = lambda name: (lambda c: (c[name]["params"]["classifier"]["kernel"],
                                     c[name]["params"]["classifier"]["bias"]))
  teachers = crossx_dfl.Teachers(frozen("photo"), frozen("sketch"), frozen("modality"),
                                 proxies("photo"), proxies("sketch"))
  student_model = _Students()
  student_vars = {k: {**v} for k, v in student_model.init(keys[3], images, "photo").items()}
  sketch_vars = student_model.init(keys[4], images, "sketch")
  for collection in student_vars:
    student_vars[collection].update(sketch_vars[collection])

  def encode(variables, modality, x, train):
    out, updates = student_model.apply(variables, x, modality, mutable=["batch_stats"])
    return out, ({**variables, **updates} if train else variables)

  students = crossx_dfl.Students(encode, SIZE)
  est = {m: estimator.init(k, jnp.zeros((1, LATENT)))
         for m, k in zip(("photo", "sketch"), jax.random.split(keys[5]))}
  params = {"estimators": {m: v["params"] for m, v in est.items()},
            "students": student_vars["params"]}
  state = {"estimators": {m: {"batch_stats": v["batch_stats"]} for m, v in est.items()},
           "students": {"batch_stats": student_vars["batch_stats"]},
           "queues": L.Queues.random(keys[5], 16, 4)}
  optimizers = {"estimators": optax.sgd(0.05, momentum=0.9),
                "students": optax.sgd(0.05, momentum=0.9)}
  tx = crossx_dfl.two_group_optimizer(optimizers)

  def generate(p, s, noise):
    out, new = {}, {}
    for m in ("photo", "sketch"):
      out[m], new[m] = estimator.apply({"params": p[m], **s[m]}, noise, train=True,
                                       mutable=["batch_stats"])
    return (out["photo"], out["sketch"]), new

  return dict(params=params, state=state, opt_state=tx.init(params), constants=constants,
              teachers=teachers, students=students, generate=generate, optimizers=optimizers)


def _period(setup, mesh=None, **schedule):
  """One period of `setup`'s networks (3 estimator steps); schedule: Schedule overrides."""
  schedule = crossx_dfl.Schedule(estimator_steps=3, batch_size=BATCH, latent_dim=LATENT,
                                 **schedule)
  shard = (lambda x: x) if mesh is None else (lambda x: jax.lax.with_sharding_constraint(
      x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))))
  step = jax.jit(lambda p, s, o, c: crossx_dfl.period_update(
      p, s, o, jax.random.key(3), c, generate=setup["generate"], teachers=setup["teachers"],
      students=setup["students"], weights=crossx_dfl.Weights(), schedule=schedule,
      optimizers=setup["optimizers"], shard=shard))
  if mesh is None:
    return step(setup["params"], setup["state"], setup["opt_state"], setup["constants"])
  with jax.set_mesh(mesh):
    return step(setup["params"], setup["state"], setup["opt_state"], setup["constants"])


def test_period_update_trains_both_players_and_every_term_is_finite():
  setup = _setup()
  params, state, _, metrics = _period(setup)
  for group in ("estimators", "students"):
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params[group],
                         setup["params"][group])
    assert all(jax.tree.leaves(moved)), group
  for name in ("L_one_hot", "L_info_entropy", "L_activation", "L_modality", "L_alignment",
               "L_adversarial", "estimator_loss", "loss", "grad_norm"):
    assert np.isfinite(metrics[name]), name
  assert int(state["queues"].position) == BATCH


def test_period_update_on_eight_devices_equals_one():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  setup = _setup()
  one = _period(setup)
  eight = _period(setup, mesh_lib.make_mesh())
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               jax.device_get(one[:2]), jax.device_get(eight[:2]))


# --- the task end to end on the real Sketchy subset --------------------------------------

def _config(variants="smoke"):
  spec = importlib.util.spec_from_file_location("dfsbir_config", REPO / "configs" /
                                                "dfsbir_sketchy.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variants)
  config.data.dir = str(need(SHARED_DATA / "sketchy").parent)
  if config.teachers.photo:
    need(pathlib.Path(config.teachers.photo))
    need(pathlib.Path(config.teachers.sketch))
  return config


def _run(workdir, *flags):
  config = _config()
  for flag in flags:
    key, value = flag.split("=", 1)
    node = config
    *path, last = key.split(".")
    for name in path:
      node = node[name]
    node[last] = type(node[last])(value)
  return dfsbir.run(config, str(workdir))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
  need(SHARED_DATA / "sketchy")
  root = tmp_path_factory.mktemp("dfsbir_teachers")
  for kind in ("unified", "modality"):
    metrics = _run(root / kind, "mode=teacher", f"teacher.kind={kind}")
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
  return root


def _teacher_flags(root):
  return (f"teachers.photo={root / 'unified'}", f"teachers.sketch={root / 'unified'}",
          f"teachers.modality={root / 'modality'}")


def _final_state(workdir, step):
  path = pathlib.Path(workdir) / "checkpoints" / str(step) / "state"
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path)
  metadata = getattr(metadata, "item_metadata", metadata)
  state = checkpointer.restore(path, jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata))
  is_key = lambda x: jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
  return jax.device_get(jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x,
                                     state))


def test_crossx_dfl_trains_evaluates_draws_and_resumes_exactly(teachers, tmp_path):
  workdir = tmp_path / "dfl"
  metrics = _run(workdir, *_teacher_flags(teachers))
  assert 0.0 < metrics["map_all"] <= 1.0 and "dfsbir_map_10hits" in metrics
  for figure in ("reconstructions.png", "map_by_step.png", "retrieval.png"):
    assert (workdir / figure).stat().st_size > 5000, figure
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  train_rows = [r for r in rows if r["split"] == "train"]
  assert {"L_adversarial", "L_alignment", "L_modality", "teacher_label_agreement"} <= set(
      train_rows[-1])
  _resumes_exactly(workdir, tmp_path / "resumed", *_teacher_flags(teachers))


def _resumes_exactly(workdir, resumed, *flags):
  """Resume a copy of `workdir` from the checkpoint of step 2 (both optimisers,
  the queues, the key): the same state at step 4. Returns that state."""
  shutil.copytree(workdir, resumed)
  shutil.rmtree(resumed / "checkpoints" / "4")
  _run(resumed, *flags)
  final = _final_state(workdir, 4)
  jax.tree.map(np.testing.assert_array_equal, final, _final_state(resumed, 4))
  return final


def test_teachers_of_other_classes_are_refused(teachers, tmp_path):
  with pytest.raises(ValueError, match=r"neither teacher knows the retrieval classes \['apple'\]"):
    _run(tmp_path / "x", *_teacher_flags(teachers), "data.classes=airplane,apple,cat")
  with pytest.raises(FileNotFoundError, match="no trained teacher"):
    _run(tmp_path / "y", f"teachers.photo={tmp_path}", f"teachers.sketch={tmp_path}")


def test_classifier_only_baseline(teachers, tmp_path):
  result = _run(tmp_path, "mode=evaluate_teachers", *_teacher_flags(teachers))
  assert result["baseline"] == "classifier only" and 0.0 < result["map_all"] <= 1.0
  assert (tmp_path / "eval_teachers_category.json").exists()


def test_inversion_estimator_and_refinement_run_in_the_period():
  setup = _setup()
  schedule = crossx_dfl.Schedule(estimator_steps=3, batch_size=6, latent_dim=LATENT,
                                 estimator="inversion", inversion_size=SIZE, refine_steps=2)
  params, _, _, metrics = jax.jit(lambda p, s, o, c: crossx_dfl.period_update(
      p, s, o, jax.random.key(3), c, generate=setup["generate"], teachers=setup["teachers"],
      students=setup["students"], weights=crossx_dfl.Weights(), schedule=schedule,
      optimizers=setup["optimizers"]))(setup["params"], setup["state"], setup["opt_state"],
                                        setup["constants"])
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["inversion_aimed_ce"])
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params["students"],
                       setup["params"]["students"])
  assert all(jax.tree.leaves(moved))


def test_inversion_reaches_its_classes_and_refinement_raises_disagreement():
  setup = _setup()
  student_variables = {"params": setup["params"]["students"], **setup["state"]["students"]}
  common = dict(teachers=setup["teachers"], students=setup["students"],
                student_variables=student_variables)
  (photos, sketches, photo_labels, _), _ = jax.jit(lambda c: crossx_dfl.invert_pairs(
      jax.random.key(0), c, weights=crossx_dfl.Weights(), num_classes=CLASSES, per_class=2,
      size=SIZE, steps=60, learning_rate=0.1, **common))(setup["constants"])
  assert photos.shape == (CLASSES * 2, SIZE, SIZE, 3) and np.abs(photos).max() <= 1.0
  np.testing.assert_array_equal(photo_labels, np.repeat(np.arange(CLASSES), 2))
  before = crossx_dfl.disagreement(photos, sketches, setup["constants"], **common)
  refined = crossx_dfl.refine_pairs(photos, sketches, setup["constants"], steps=3,
                                    step_size=0.05, **common)
  after = crossx_dfl.disagreement(*refined, setup["constants"], **common)
  assert after > before
  assert np.abs(np.asarray(refined[0]) - np.asarray(photos)).max() <= 0.15 + 1e-6


def test_external_teachers_map_their_classes():
  from sketchjax.tasks import dfsbir_teachers
  config = _config("smoke,external")
  classes = ("airplane", "cat", "dog", "horse", "zebra")
  teachers, constants = dfsbir_teachers.load_teachers(config, classes)
  assert teachers.shared_photo is None and teachers.sketch_proxies is None
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  photo_logits, features = teachers.photo(constants, images)
  assert photo_logits.shape == (2, 5) and features.shape == (2, 1280)
  # A class's logit is the log of the summed exp-logits of its ImageNet labels.
  from sketchjax.data import imagenet_classes
  from sketchjax.models import mobilenet_v2
  model, variables, _ = mobilenet_v2.load_mobilenet_v2(config.teachers.photo)
  logits = model.apply(variables, jax.image.resize(images, (2, 128, 128, 3), "bilinear"))[0]
  dog = list(imagenet_classes.SKETCHY_TO_IMAGENET["dog"])
  np.testing.assert_allclose(photo_logits[:, 2], jax.nn.logsumexp(logits[:, dog], -1),
                             rtol=1e-4)
  sketch_logits, _ = teachers.sketch(constants, images)
  assert sketch_logits.shape == (2, 5)
  kernel, bias = teachers.photo_proxies(constants)
  assert kernel.shape == (1280, 5) and bias.shape == (5,)


def test_partially_overlapping_teachers_align_on_the_shared_classes(teachers):
  from sketchjax.tasks import dfsbir_teachers
  config = _config("smoke,external")
  config.teachers.photo = str(teachers / "unified")  # airplane, cat, dog, horse, zebra
  classes = ("airplane", "bicycle", "cat", "dog", "horse", "zebra")  # doodleNet: all six
  loaded, _ = dfsbir_teachers.load_teachers(config, classes)
  np.testing.assert_array_equal(loaded.shared_photo, [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(loaded.shared_sketch, [0, 2, 3, 4, 5])
