"""Photo / sketch encoders: shapes, unit norm, published parameter counts, gradients, shared
weights, BatchNorm statistics, and backbones initialised from pretrained files."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from conftest import SHARED_DATA
from PIL import Image
from test_pretrained_weights import google_vit_arrays, torchvision_resnet18_state

from sketchjax.models import encoders, mobilenet_v2, torchvision_resnet, vit_image


def count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def images(seed: int, size: int = 32, batch: int = 2) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)),
                     jnp.float32)


@pytest.mark.parametrize("backbone,features", [("vit_small", 192), ("mobilenet_v2", 1280)])
def test_image_encoder_shapes_and_unit_norm(backbone, features):
  model = encoders.ImageEncoder(backbone, embed_dim=24)
  variables = encoders.init_encoder_variables(model, jax.random.key(0), 32)
  embeddings, aux = jax.jit(model.apply)(variables, images(1))
  assert embeddings.shape == (2, 24) and embeddings.dtype == jnp.float32
  np.testing.assert_allclose(jnp.linalg.norm(embeddings, axis=-1), 1.0, rtol=1e-6)
  assert aux["features"].shape == (2, features)
  assert not np.allclose(embeddings[0], embeddings[1])
  if backbone.startswith("vit"):
    assert aux["tokens"].shape == (2, 1 + 4, features)
  else:
    assert aux["feature_map"].shape[-1] == features


def test_published_parameter_counts():
  x = jnp.zeros((1, 224, 224, 3))
  key = jax.random.key(0)
  shapes = lambda model: jax.eval_shape(model.init, key, x)["params"]  # noqa: E731
  assert count(shapes(torchvision_resnet.resnet18())) == 11_689_512
  assert count(shapes(torchvision_resnet.resnet34())) == 21_797_672
  assert count(shapes(vit_image.vit_b16(num_classes=1000))) == 86_567_656
  # The encoders: the published backbone without its 1000-way head, plus the projection.
  for backbone, published, width in [("resnet34", 21_797_672, 512), ("vit_b16", 86_567_656, 768)]:
    model = encoders.ImageEncoder(backbone, embed_dim=256)
    embeddings, aux = jax.eval_shape(model.apply, jax.eval_shape(model.init, key, x), x)
    assert embeddings.shape == (1, 256) and aux["features"].shape == (1, width)
    head, projection = width * 1000 + 1000, width * 256 + 256
    assert count(shapes(model)) == published - head + projection


def test_shared_and_separate_weights():
  separate = encoders.SketchPhotoEncoder("vit_small", embed_dim=16)
  shared = encoders.SketchPhotoEncoder("vit_small", embed_dim=16, shared=True)
  v_separate = encoders.init_encoder_variables(separate, jax.random.key(0), 32)
  v_shared = encoders.init_encoder_variables(shared, jax.random.key(0), 32)
  assert set(v_separate["params"]) == {"sketch", "photo"}
  assert set(v_shared["params"]) == {"encoder"}
  assert count(v_separate) == 2 * count(v_shared)
  x = images(2)
  for model, variables, same in [(separate, v_separate, False), (shared, v_shared, True)]:
    sketch_emb, photo_emb = model.apply(variables, x, x)
    assert np.allclose(sketch_emb, photo_emb) == same
    np.testing.assert_array_equal(
        photo_emb, model.apply(variables, x, method=model.encode_photo)[0])


def test_resnet_shapes_gradients_and_batch_stats():
  model = encoders.SketchPhotoEncoder("resnet18", embed_dim=16)
  variables = encoders.init_encoder_variables(model, jax.random.key(0), 32)
  sketches, photos = images(3), images(4, batch=3)

  def loss(params):
    (s, p), state = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                sketches, photos, train=True, mutable=["batch_stats"])
    return -jnp.sum(s @ p.T), (state, s, p)

  grads, (state, sketch_emb, photo_emb) = jax.jit(jax.grad(loss, has_aux=True))(
      variables["params"])
  assert sketch_emb.shape == (2, 16) and photo_emb.shape == (3, 16)
  np.testing.assert_allclose(jnp.linalg.norm(photo_emb, axis=-1), 1.0, rtol=1e-6)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  for modality in ("sketch", "photo"):
    assert float(jnp.abs(grads[modality]["backbone"]["conv1"]["kernel"]).max()) > 0
    before = variables["batch_stats"][modality]["backbone"]["bn1"]["mean"]
    after = state["batch_stats"][modality]["backbone"]["bn1"]["mean"]
    assert not np.allclose(before, after)
  # Evaluation reads the running statistics: no "batch_stats" mutation is allowed or needed.
  embeddings, aux = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_photo))(
      variables, photos)
  np.testing.assert_allclose(jnp.linalg.norm(embeddings, axis=-1), 1.0, rtol=1e-6)
  assert aux["features"].shape == (3, 512) and aux["feature_map"].shape == (3, 1, 1, 512)


def test_resnet_backbones_from_safetensors(tmp_path):
  state = torchvision_resnet18_state(0)
  path = tmp_path / "resnet18.safetensors"
  safetensors.numpy.save_file(state, path)
  model = encoders.SketchPhotoEncoder("resnet18", embed_dim=16)
  variables = encoders.init_encoder_variables(model, jax.random.key(0), 32, pretrained=path)
  for modality in ("sketch", "photo"):
    backbone = variables["params"][modality]["backbone"]
    np.testing.assert_array_equal(backbone["layer2_0"]["downsample_0"]["kernel"],
                                  state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        variables["batch_stats"][modality]["backbone"]["layer4_1"]["bn2"]["mean"],
        state["layer4.1.bn2.running_mean"])
    assert "fc" not in backbone
  assert not np.allclose(variables["params"]["sketch"]["projection"]["kernel"],
                         variables["params"]["photo"]["projection"]["kernel"])
  with pytest.raises(ValueError, match=re.escape(f"{path}: no weight 'layer1.2.")):
    encoders.init_encoder_variables(encoders.ImageEncoder("resnet34"), jax.random.key(0), 32,
                                    pretrained=path)


def test_vit_backbone_from_google_npz(tmp_path):
  arrays = google_vit_arrays(0, grid=2)
  path = tmp_path / "ViT-S_16.npz"
  np.savez(path, **arrays)
  model = encoders.SketchPhotoEncoder("vit_small", embed_dim=16, shared=True)
  variables = encoders.init_encoder_variables(model, jax.random.key(0), 64, pretrained=path)
  backbone = variables["params"]["encoder"]["backbone"]
  np.testing.assert_array_equal(backbone["encoder"]["block_3"]["attention"]["query"]["kernel"],
                                arrays["Transformer/encoderblock_3/MultiHeadDotProductAttention_1/"
                                       "query/kernel"])
  assert backbone["pos_embed"].shape == (1, 17, 192)  # 2x2 checkpoint grid resized to 4x4


@pytest.fixture
def airplane_photo() -> np.ndarray:
  folder = SHARED_DATA / "sketchy" / "photo" / "airplane"
  if not folder.is_dir():
    pytest.skip(f"real data not found at {folder}")
  image = Image.open(sorted(folder.glob("*.jpg"))[0]).convert("RGB").resize((64, 64))
  return np.asarray(image, np.float32)[None] / 127.5 - 1


def test_mobilenet_imagenet_init_reproduces_loader_features(pretrained_dir, airplane_photo):
  path = pretrained_dir / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite"
  model = encoders.SketchPhotoEncoder("mobilenet_v2", embed_dim=16, mobilenet_batch_norm=False)
  variables = encoders.init_encoder_variables(model, jax.random.key(0), 64, pretrained=path)
  assert "batch_stats" not in variables
  reference, reference_variables, _ = mobilenet_v2.load_mobilenet_v2(path)

  @jax.jit
  def features(variables, reference_variables, x):
    photo = model.apply(variables, x, method=model.encode_photo)[1]["features"]
    sketch = model.apply(variables, x, method=model.encode_sketch)[1]["features"]
    return photo, sketch, reference.apply(reference_variables, x)[1]["pooled"]

  photo, sketch, expected = features(variables, reference_variables, airplane_photo)
  np.testing.assert_allclose(photo, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sketch, expected, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(expected).max()) > 0.1  # real activations, not an all-zero map
  with pytest.raises(ValueError, match="BatchNorm-folded.*mobilenet_batch_norm=False"):
    encoders.init_encoder_variables(encoders.ImageEncoder("mobilenet_v2"), jax.random.key(0), 64,
                                    pretrained=path)


def test_unknown_backbone_and_bad_images():
  with pytest.raises(ValueError, match="unknown encoder backbone 'resnet50'"):
    encoders.init_encoder_variables(encoders.ImageEncoder("resnet50"), jax.random.key(0), 32)
  model = encoders.ImageEncoder("resnet18")
  with pytest.raises(ValueError, match=r"images \[B, H, W, 3\]"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
