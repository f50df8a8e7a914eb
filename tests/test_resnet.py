"""Tests of the GroupNorm ResNet-18 and the raster classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models.raster_classifier import RasterClassifier
from sketchjax.models.resnet import ResNet18

SMALL_WIDTHS = (8, 16, 16, 24)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_full_size_parameter_count_matches_torchvision():
  """torchvision resnet18 has 11,689,512 parameters; one input channel saves 2 * 64 * 7 * 7."""
  shapes = jax.eval_shape(ResNet18(1000).init, jax.random.key(0), jnp.zeros((1, 64, 64, 1)))
  assert _count(shapes) == 11_689_512 - 2 * 64 * 7 * 7


def test_small_resnet_shapes_and_gradients():
  model = ResNet18(7, widths=SMALL_WIDTHS, blocks=(1, 1, 1, 1), norm_groups=4)
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1))
  params = jax.jit(model.init)(jax.random.key(1), images)
  logits, out = jax.jit(model.apply)(params, images)
  assert logits.shape == (2, 7) and out["features"].shape == (2, 24)
  grads = jax.jit(jax.grad(lambda p: model.apply(p, images)[0].sum()))(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert params["params"]["stage4_block1"]["norm1"]["scale"].shape == (24,)
  with pytest.raises(ValueError, match="images"):
    model.apply(params, images[..., 0])


def test_raster_classifier_rasterises_the_stroke_batch():
  points = np.zeros((2, 3, 4, 4), np.float32)
  points[:, 0, 1:, :2] = 0.2
  stroke_len = np.array([[4, 0, 0], [2, 3, 0]], np.int32)
  loc = np.full((2, 3, 2), -0.5, np.float32)
  model = RasterClassifier(5, image_size=32, widths=SMALL_WIDTHS, blocks=(1, 1, 1, 1),
                           norm_groups=4)
  batch = {"points": points, "stroke_len": stroke_len, "loc": loc}
  params = jax.jit(model.init, static_argnames="train")(jax.random.key(0), batch, train=False)
  logits, out = jax.jit(model.apply, static_argnames="train")(params, batch, train=True)
  assert logits.shape == (2, 5)
  assert out["image"].shape == (2, 32, 32) and float(out["image"].max()) == 1.0
  assert {"image", "features", "logits"} <= set(out)
