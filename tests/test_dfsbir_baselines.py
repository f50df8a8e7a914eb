"""The paper's baselines of CrossX-DFL (spec 2.8): the feature-statistics loss
against numpy, the distillation loss and the label pairing by hand, each
baseline's period on the tiny stand-in networks of test_dfsbir, the config
variants, and the alternative data on the real folders."""

import dataclasses
import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.data import image_pipeline
from sketchjax.methods import crossx_dfl
from sketchjax.methods import feature_statistics as fs
from conftest import SHARED_DATA, need
from test_dfsbir import BATCH, LATENT, REPO, SIZE, _setup


class _ConvBn(nn.Module):
  """conv -> BN -> relu -> conv -> BN (the layers DeepInversion reads)."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(3, (3, 3), name="c1")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=True, name="b1")(x))
    x = nn.Conv(2, (1, 1), name="c2")(x)
    return nn.BatchNorm(use_running_average=True, name="b2")(x).mean((1, 2))


class _ConvOnly(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(3, (3, 3), name="c1")(x))
    return nn.Dense(2)(nn.Conv(2, (1, 1), name="c2")(x).mean((1, 2)))


def _with_running_stats(variables, rng):
  """Running means / vars set to random values (not 0 / 1, so the test can fail)."""
  stats = jax.tree.map(lambda x: jnp.asarray(rng.uniform(0.5, 2.0, x.shape), jnp.float32),
                       variables["batch_stats"])
  return {**variables, "batch_stats": stats}


def test_statistics_loss_of_batch_norm_inputs_matches_numpy():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 5, 5, 2)), jnp.float32)
  model = _ConvBn()
  variables = _with_running_stats(model.init(jax.random.key(0), x), rng)
  loss = fs.feature_statistics_loss(model.apply, variables, x)
  # numpy: the BN inputs are the conv outputs (b1 sees c1, b2 sees c2 of relu(b1)).
  conv = lambda name, features, k, inputs: np.asarray(nn.Conv(features, (k, k)).apply(
      {"params": variables["params"][name]}, inputs))
  c1 = conv("c1", 3, 3, x)
  stats = variables["batch_stats"]
  b1 = (c1 - stats["b1"]["mean"]) / np.sqrt(stats["b1"]["var"] + 1e-5)
  b1 = b1 * variables["params"]["b1"]["scale"] + variables["params"]["b1"]["bias"]
  c2 = conv("c2", 2, 1, jnp.maximum(b1, 0.0))
  expected = 0.0
  for out, name in ((c1, "b1"), (c2, "b2")):
    flat = out.reshape(-1, out.shape[-1])
    expected += np.sum((flat.mean(0) - stats[name]["mean"]) ** 2)
    expected += np.sum((flat.var(0) - stats[name]["var"]) ** 2)
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  assert expected > 0.1


def test_bn_free_network_records_conv_outputs_and_needs_a_reference():
  rng = np.random.default_rng(1)
  real = jnp.asarray(rng.normal(size=(6, 4, 4, 2)), jnp.float32)
  fake = jnp.asarray(rng.normal(2.0, 0.5, size=(3, 4, 4, 2)), jnp.float32)
  model = _ConvOnly()
  variables = model.init(jax.random.key(1), real)
  out, reference, running = fs.record(model.apply, variables, real)
  assert running is None and len(reference.means) == 2 and out.shape == (6, 2)
  c1 = np.asarray(nn.Conv(3, (3, 3)).apply({"params": variables["params"]["c1"]},
                                           real)).reshape(-1, 3)
  np.testing.assert_allclose(reference.means[0], c1.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(reference.variances[0], c1.var(0), rtol=1e-4, atol=1e-6)
  assert float(fs.feature_statistics_loss(model.apply, variables, real,
                                          reference=reference)) < 1e-8
  assert float(fs.feature_statistics_loss(model.apply, variables, fake,
                                          reference=reference)) > 1e-3
  with pytest.raises(ValueError, match="reference statistics"):
    fs.feature_statistics_loss(model.apply, variables, fake)
  with pytest.raises(ValueError, match="neither nn.BatchNorm nor nn.Conv"):
    fs.record(nn.Dense(2).apply, nn.Dense(2).init(jax.random.key(0), real), real)
  halves = fs.mean_statistics([fs.record(model.apply, variables, real[:3])[1],
                               fs.record(model.apply, variables, real[3:])[1]])
  np.testing.assert_allclose(halves.means[1], reference.means[1], rtol=1e-5, atol=1e-6)


def test_distillation_loss_by_hand():
  features, kernel = jnp.array([[1.0, 0.0]]), jnp.array([[1.0, -1.0], [0.0, 0.0]])
  teacher = jnp.array([[0.0, 0.0]])  # uniform target
  student = np.array([1.0, -1.0])
  p = np.exp(student) / np.exp(student).sum()
  expected = np.sum(0.5 * (np.log(0.5) - np.log(p)))
  np.testing.assert_allclose(crossx_dfl.distillation_loss(features, teacher, kernel,
                                                          jnp.zeros(2)), expected, rtol=1e-6)
  assert not np.any(jax.grad(crossx_dfl.distillation_loss, argnums=1)(
      features, teacher + 1.0, kernel, jnp.zeros(2)))


def test_pair_by_labels_matches_labels_and_falls_back():
  photo = jnp.array([0, 1, 2, 2, 3])
  sketch = jnp.array([2, 2, 0, 1, 1])
  # photo class 3 is unknown to the sketch teacher; class 2 is its class 0 etc.
  sketch_of_photo = jnp.array([1, 2, 0, -1])
  for seed in range(5):
    partner = np.asarray(crossx_dfl.pair_by_labels(jax.random.key(seed), photo, sketch,
                                                   sketch_of_photo))
    np.testing.assert_array_equal(np.asarray(sketch)[partner[:4]],
                                  np.asarray(sketch_of_photo)[np.asarray(photo[:4])])
    assert 0 <= partner[4] < 5


def _period(setup, schedule, weights=crossx_dfl.Weights(), real=None, teachers=None):
  return jax.jit(lambda p, s, o, c: crossx_dfl.period_update(
      p, s, o, jax.random.key(3), c, generate=setup["generate"],
      teachers=teachers or setup["teachers"], students=setup["students"], weights=weights,
      schedule=schedule, optimizers=setup["optimizers"], real=real))(
          setup["params"], setup["state"], setup["opt_state"], setup["constants"])


def _moved(new, old):
  return jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new, old))


@pytest.mark.parametrize("source", ["gaussian", "real"])
def test_gaussian_and_alternative_data_train_the_students_on_label_pairs(source):
  setup = _setup()
  schedule = crossx_dfl.Schedule(estimator_steps=3, batch_size=BATCH, latent_dim=LATENT,
                                 estimator=source, gaussian_size=SIZE)
  rng = np.random.default_rng(2)
  real = tuple(jnp.asarray(rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)), jnp.float32)
               for _ in range(2)) if source == "real" else None
  params, _, _, metrics = _period(setup, schedule, real=real)
  assert all(_moved(params["students"], setup["params"]["students"]))
  assert not any(_moved(params["estimators"], setup["params"]["estimators"]))
  assert np.isfinite(metrics["loss"]) and 1 <= metrics["distinct_photo_labels"] <= 3
  if source == "real":
    with pytest.raises(ValueError, match="needs the real images"):
      _period(setup, schedule)


def test_gaussian_pairs_are_clipped_gaussians_labelled_by_their_teachers():
  setup = _setup()
  photos = jnp.clip(0.5 * jax.random.normal(jax.random.key(0), (BATCH, SIZE, SIZE, 3)), -1, 1)
  sketches = -photos
  (p, s, pl, sl), _ = crossx_dfl.labelled_pairs(jax.random.key(1), photos, sketches,
                                                setup["constants"], setup["teachers"])
  teachers, c = setup["teachers"], setup["constants"]
  np.testing.assert_array_equal(pl, jnp.argmax(teachers.photo(c, photos)[0], -1))
  np.testing.assert_array_equal(sl, jnp.argmax(teachers.sketch(c, s)[0], -1))
  # Each sketch is one of the batch's, kept with its own label.
  assert all(any(np.array_equal(x, y) for y in np.asarray(sketches)) for x in np.asarray(s))


def test_unimodal_distillation_has_no_cross_modal_term():
  setup = _setup()
  schedule = crossx_dfl.Schedule(estimator_steps=2, batch_size=BATCH, latent_dim=LATENT,
                                 metric="distillation")
  weights = crossx_dfl.Weights(modality=0.0, alignment=0.0)
  params, _, _, metrics = _period(setup, schedule, weights)
  assert "L_alignment" not in metrics and "L_modality" not in metrics
  assert np.isfinite(metrics["loss"]) and metrics["loss"] >= 0.0
  assert all(_moved(params["students"], setup["params"]["students"]))
  # The photo student's loss does not depend on the sketches (no pairing).
  student_variables = setup["params"]["students"], setup["state"]["students"]
  images = jax.random.uniform(jax.random.key(0), (2, BATCH, SIZE, SIZE, 3), minval=-1)
  labels = jnp.zeros(BATCH, jnp.int32)

  def loss(sketches):
    return crossx_dfl.student_loss(
        *student_variables, students=setup["students"],
        pairs=(images[0], sketches, labels, labels), teachers=setup["teachers"],
        constants=setup["constants"], queues=setup["state"]["queues"],
        metric="distillation", temperature=0.07)[0]

  sketch_loss = lambda s: crossx_dfl.distillation_loss(
      setup["students"].encode({"params": student_variables[0], **student_variables[1]},
                               "sketch", s, True)[0][1],
      setup["teachers"].sketch(setup["constants"], s)[0],
      *setup["teachers"].sketch_proxies(setup["constants"]))
  np.testing.assert_allclose(loss(images[1]) - sketch_loss(images[1]),
                             loss(-images[1]) - sketch_loss(-images[1]), rtol=1e-5)


def test_metadata_inversion_lowers_the_statistics_loss():
  setup = _setup()
  net = _ConvBn()
  net_vars = _with_running_stats(net.init(jax.random.key(5), jnp.zeros((1, SIZE, SIZE, 3))),
                                 np.random.default_rng(3))
  constants = {**setup["constants"], "net": net_vars}
  statistics = lambda c, x: fs.feature_statistics_loss(net.apply, c["net"], x)
  teachers = dataclasses.replace(setup["teachers"], photo_statistics=statistics,
                                 sketch_statistics=statistics)
  weights = crossx_dfl.Weights(activation=0.0, modality=0.0, alignment=0.0, adversarial=0.0,
                               statistics=1.0)
  common = dict(teachers=teachers, students=setup["students"],
                student_variables={"params": setup["params"]["students"],
                                   **setup["state"]["students"]},
                weights=weights, num_classes=3, per_class=2, size=SIZE, learning_rate=0.05)
  short = jax.jit(lambda c: crossx_dfl.invert_pairs(jax.random.key(0), c, steps=1, **common))
  long = jax.jit(lambda c: crossx_dfl.invert_pairs(jax.random.key(0), c, steps=40, **common))
  assert long(constants)[1]["inversion_statistics"] < short(constants)[1]["inversion_statistics"]
  with pytest.raises(ValueError, match="feature statistics"):
    crossx_dfl.invert_pairs(jax.random.key(0), constants, steps=1, **{
        **common, "teachers": setup["teachers"]})


def _config(variants):
  spec = importlib.util.spec_from_file_location("dfsbir_config", REPO / "configs" /
                                                "dfsbir_sketchy.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variants)


def test_baseline_variants():
  assert _config("gaussian").dfl.estimator == "gaussian"
  unimodal = _config("unimodal").dfl
  assert unimodal.metric == "distillation" and unimodal.alignment == unimodal.modality == 0
  metadata = _config("metadata").dfl
  assert metadata.estimator == "inversion" and metadata.statistics > 0
  assert metadata.alignment == metadata.modality == metadata.adversarial == 0
  assert _config("alternative").dfl.estimator == "real"
  with pytest.raises(ValueError, match="unknown variant"):
    _config("meta_data")


def test_random_pairing_draws_photos_regardless_of_class():
  class Source(image_pipeline.ItemSource):  # in-memory pixels, no files
    def __init__(self, labels, modality):
      self.labels = np.asarray(labels, np.int32)
      self.instances = ("",) * len(labels)
      self.modalities = (modality,) * len(labels)
      self.names = tuple(map(str, range(len(labels))))

    def __len__(self):
      return len(self.labels)

    def image(self, index):
      return np.full((4, 4, 3), index, np.uint8)

  photos, sketches = Source([0] * 6 + [1] * 6, "photo"), Source([0] * 24, "sketch")
  batches = image_pipeline.pair_train_iterator(
      photos, sketches, global_batch_size=24, seed=0, pairing="random",
      preprocess=lambda image, modality: image.astype(np.float32))
  seen = {int(b[0, 0, 0]) for b in next(batches)["photo"]}
  assert any(i >= 6 for i in seen) and len(seen) > 4  # photos of class 1 for class-0 sketches


def test_alternative_data_are_other_classes():
  from sketchjax.tasks import dfsbir
  config = _config("alternative")
  config.data.dir = str(need(SHARED_DATA / "sketchy").parent)
  need(SHARED_DATA / "quickdraw" / "simplified")
  config.dfl.alternative_count, config.dfl.alternative_per_class = 3, 2
  retrieval = config.data.classes.split(",")
  photos, drawings = dfsbir.alternative_sources(config, retrieval)
  assert len(photos) == len(drawings) == 6
  classes = {item.label for item in photos.items} | {item.label for item in drawings.items}
  assert len(classes) == 3 and not classes & set(retrieval)
  assert all(item.path.endswith(".jpg") or ".ndjson#" in item.path
             for item in photos.items + drawings.items)
  assert photos.image(0).ndim == drawings.image(0).ndim == 3
  config.dfl.alternative_classes = "airplane,apple"
  with pytest.raises(ValueError, match=r"\['airplane'\] are retrieval classes"):
    dfsbir.alternative_sources(config, retrieval)


def test_real_images_of_the_training_split_are_the_teachers_own():
  """dfl.real_images="training_split" (ours, a diagnosis): the split's training photos and
  sketches, labelled by the training side's classes; anything else refused."""
  from sketchjax.data import image_items
  from sketchjax.data import sbir_splits
  from sketchjax.tasks import dfsbir
  side = sbir_splits.SplitSide(
      photos=(image_items.ImageItem("p.png", "cat", "photo"),),
      sketches=(image_items.ImageItem("s1.png", "cat", "sketch"),
                image_items.ImageItem("s2.png", "dog", "sketch")),
      classes=("cat", "dog"))
  split = sbir_splits.SbirSplit("category", side, side, "class", "class")
  config = _config("alternative")
  config.dfl.real_images = "training_split"
  photos, sketches = dfsbir.real_sources(config, split)
  assert photos.items == side.photos and sketches.items == side.sketches
  np.testing.assert_array_equal(sketches.labels, [0, 1])
  config.dfl.real_images = "test_split"
  with pytest.raises(ValueError, match="'other_classes' or 'training_split'"):
    dfsbir.real_sources(config, split)
