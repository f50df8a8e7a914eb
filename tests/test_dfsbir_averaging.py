"""The "averaging weights" baseline of CrossX-DFL (spec 2.8; our reading): the
averaged variables leaf by leaf, the embedding of the averaged network, the
refusals, and the evaluation mode on two smoke teachers of the real subset."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models import encoders
from sketchjax.tasks import dfsbir_teachers
from conftest import SHARED_DATA, need
from test_dfsbir import _run


def _two_classifiers(classes=3, size=32):
  """A MobileNetV2 classifier with BatchNorm (params and batch_stats) and two
  different random initialisations of it."""
  model = encoders.ImageClassifier("mobilenet_v2", classes, mobilenet_batch_norm=True)
  images = jnp.zeros((1, size, size, 3))
  a, b = (model.init(jax.random.key(k), images) for k in (0, 1))
  # Running statistics other than 0 / 1, so that their average is tested too.
  b = {**b, "batch_stats": jax.tree.map(lambda x: x + 0.5, b["batch_stats"])}
  return model, a, b


def test_averaged_variables_are_the_leafwise_mean_of_params_and_statistics():
  _, a, b = _two_classifiers()
  averaged = dfsbir_teachers.average_variables(a, b)
  assert set(averaged) == {"params", "batch_stats"}
  assert jax.tree.structure(averaged) == jax.tree.structure(a)
  for x, y, m in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(averaged)):
    np.testing.assert_allclose(m, (np.asarray(x) + np.asarray(y)) / 2, rtol=1e-6, atol=1e-7)
  kernel = lambda v: np.asarray(v["params"]["classifier"]["kernel"])
  assert not np.allclose(kernel(averaged), kernel(a))
  assert not np.allclose(kernel(averaged), kernel(b))


def test_embedding_is_the_averaged_networks_unit_features_not_the_mean_of_two():
  model, a, b = _two_classifiers()
  averaged = dfsbir_teachers.average_variables(a, b)
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)), jnp.float32)
  embed = dfsbir_teachers.feature_embedding(model, 32)
  out = np.asarray(embed(averaged, images))
  assert out.shape == (4, 1280)
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
  # The averaged network by hand: numpy-averaged leaves, inputs resized to 32.
  by_hand = jax.tree.map(lambda x, y: (np.asarray(x) + np.asarray(y)) / 2, a, b)
  resized = jax.image.resize(images, (4, 32, 32, 3), "bilinear")
  features = np.asarray(model.apply(by_hand, resized)[1]["features"])
  np.testing.assert_allclose(out, features / np.linalg.norm(features, axis=-1, keepdims=True),
                             rtol=1e-4, atol=1e-5)
  # Averaging weights is not averaging the two networks' embeddings.
  mean_of_two = (np.asarray(embed(a, images)) + np.asarray(embed(b, images))) / 2
  mean_of_two /= np.linalg.norm(mean_of_two, axis=-1, keepdims=True)
  assert np.abs(out - mean_of_two).max() > 1e-3


def test_variables_of_different_architectures_are_refused():
  _, a, _ = _two_classifiers(classes=3)
  _, c, _ = _two_classifiers(classes=4)
  with pytest.raises(ValueError, match="different shapes"):
    dfsbir_teachers.average_variables(a, c)
  with pytest.raises(ValueError, match="different architectures"):
    dfsbir_teachers.average_variables(a, {"params": a["params"]})


@pytest.fixture(scope="module")
def smoke_teachers(tmp_path_factory):
  need(SHARED_DATA / "sketchy")
  root = tmp_path_factory.mktemp("dfsbir_averaging_teachers")
  for kind in ("photo", "sketch"):
    _run(root / kind, "mode=teacher", f"teacher.kind={kind}")
  return root


def test_averaging_weights_mode_on_two_trained_teachers(smoke_teachers, tmp_path):
  photo, sketch = smoke_teachers / "photo", smoke_teachers / "sketch"
  _, photo_vars, _ = dfsbir_teachers.load_teacher(photo)
  _, sketch_vars, _ = dfsbir_teachers.load_teacher(sketch)
  model, averaged, size = dfsbir_teachers.averaged_teacher(photo, sketch)
  assert size == 32 and model.backbone == "mobilenet_v2"
  jax.tree.map(lambda m, x, y: np.testing.assert_allclose(m, (x + y) / 2, rtol=1e-6, atol=1e-7),
               averaged, photo_vars, sketch_vars)
  _, itself, _ = dfsbir_teachers.averaged_teacher(photo, photo)
  jax.tree.map(np.testing.assert_array_equal, itself, photo_vars)
  result = _run(tmp_path, "mode=evaluate_averaged", f"teachers.photo={photo}",
                f"teachers.sketch={sketch}")
  assert result["baseline"] == "averaging weights" and 0.0 < result["map_all"] <= 1.0
  saved = json.loads((tmp_path / "eval_averaged_category.json").read_text())
  assert saved["map_all"] == result["map_all"]
  with pytest.raises(ValueError, match="unknown mode"):
    _run(tmp_path, "mode=evaluate_average")
