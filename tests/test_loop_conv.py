"""loop_conv: lax's convolution and input gradient, the weight gradient as patches @ dy;
non-overlapping convolutions as patches @ kernel."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models import loop_conv

_NHWC = ("NHWC", "HWIO", "NHWC")


def _loss(conv, x, w):
  out = conv(x, w, (2, 2), ((3, 2), (1, 0)), dimension_numbers=_NHWC)
  return jnp.sum(jnp.sin(out))


@pytest.mark.parametrize("kernel, strides, padding", [
    ((3, 3), (2, 2), ((1, 1), (1, 1))), ((7, 7), (2, 2), ((3, 3), (3, 3))),
    ((4, 4), (4, 4), "VALID"), ((2, 2), (2, 2), ((0, 0), (0, 0))), ((3, 2), (1, 2), "SAME"),
    ((2, 2), (2, 2), ((1, 1), (1, 1)))])
def test_values_and_gradients_equal_lax(kernel, strides, padding):
  x = jax.random.normal(jax.random.key(0), (2, 12, 10, 3))
  w = jax.random.normal(jax.random.key(1), (*kernel, 3, 5))

  def loss(conv):
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w, strides, padding,
                                             dimension_numbers=_NHWC)))

  ours, theirs = loss(loop_conv.conv_general_dilated), loss(lax.conv_general_dilated)
  if kernel == strides and padding in ("VALID", ((0, 0), (0, 0))):  # patches @ kernel
    np.testing.assert_allclose(ours(x, w), theirs(x, w), rtol=1e-5)
  else:
    np.testing.assert_array_equal(ours(x, w), theirs(x, w))  # the forward is lax's own
  for a, b in zip(jax.grad(ours, argnums=(0, 1))(x, w), jax.grad(theirs, argnums=(0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(a)).max() > 0.1


def test_weight_gradient_inside_a_scan_equals_lax():
  xs = jax.random.normal(jax.random.key(2), (3, 2, 9, 9, 4))
  w = jax.random.normal(jax.random.key(3), (3, 3, 4, 6))

  def summed(conv):
    grad = jax.grad(lambda w, x: _loss(conv, x, w))
    return jax.jit(lambda w: lax.scan(lambda c, x: (c + grad(w, x), None), jnp.zeros_like(w),
                                      xs)[0])

  np.testing.assert_allclose(summed(loop_conv.conv_general_dilated)(w),
                             summed(lax.conv_general_dilated)(w), rtol=1e-4, atol=1e-4)


def test_grouped_or_dilated_convolutions_fall_back_to_lax():
  x = jax.random.normal(jax.random.key(4), (1, 8, 8, 4))
  w = jax.random.normal(jax.random.key(5), (3, 3, 1, 4))
  kwargs = dict(dimension_numbers=_NHWC, feature_group_count=4)
  np.testing.assert_array_equal(
      loop_conv.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs),
      lax.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs))
  assert "custom_vjp" not in str(jax.make_jaxpr(
      lambda x: loop_conv.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs))(x))


@pytest.mark.parametrize("shape, kernel", [((2, 13, 10, 3), (2, 2)), ((1, 16, 16, 4), (16, 16)),
                                           ((3, 9, 8, 2), (3, 4))])
def test_patch_conv_is_the_valid_convolution_with_its_kernel_as_stride(shape, kernel):
  """Rows / columns past the last whole patch are dropped, as by a VALID convolution."""
  x = jax.random.normal(jax.random.key(4), shape)
  w = jax.random.normal(jax.random.key(5), (*kernel, shape[-1], 7))
  ours = loop_conv.patch_conv(x, w)
  theirs = lax.conv_general_dilated(x, w, kernel, "VALID", dimension_numbers=_NHWC)
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
