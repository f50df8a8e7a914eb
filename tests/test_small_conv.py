"""Convolutions of maps smaller than the kernel as one product equal lax's convolution."""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models import small_conv

DN = ("NHWC", "HWIO", "NHWC")
# (input side, kernel, stride, padding, computed as products rather than by lax)
CASES = [(2, 3, 1, ((1, 1), (1, 1)), True),    # ResNet-34's last stage at 64 px (tap products)
         (1, 3, 1, ((1, 1), (1, 1)), True),    # only the centre tap reads the map
         (2, 5, 1, ((2, 2), (2, 2)), True),
         (2, 3, 1, ((2, 0), (0, 2)), True),    # uneven pads: taps that read only padding
         (4, 3, 2, ((1, 1), (1, 1)), True),    # its stride-2 entry: output 2 < 3
         (3, 3, 2, "SAME", True),
         (1, 7, 2, ((3, 3), (3, 3)), True),
         (8, 3, 2, ((1, 1), (1, 1)), False),   # output 4 >= 3: lax itself
         (4, 1, 2, "VALID", False)]


def _primitives(fn, *args) -> set[str]:
  return {str(e.primitive) for e in jax.make_jaxpr(fn)(*args).eqns}


@pytest.mark.parametrize("side, k, stride, padding, patches", CASES)
def test_equals_lax_convolution_values_and_gradients(side, k, stride, padding, patches):
  x = jax.random.normal(jax.random.key(0), (3, side, side, 5))
  w = jax.random.normal(jax.random.key(1), (k, k, 5, 4))
  ours = lambda x, w: small_conv.conv_general_dilated(x, w, (stride, stride), padding,
                                                      dimension_numbers=DN)
  ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding,
                                              dimension_numbers=DN)
  assert ("conv_general_dilated" not in _primitives(ours, x, w)) == patches
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(jax.random.key(2), ref(x, w).shape)
  grads = lambda f: jax.grad(lambda x, w: jnp.sum(f(x, w) * cotangent), argnums=(0, 1))(x, w)
  for a, b in zip(grads(ours), grads(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_as_the_convolution_of_a_flax_conv():
  x = jax.random.normal(jax.random.key(0), (2, 2, 2, 6))
  ours = nn.Conv(8, (3, 3), padding=1, conv_general_dilated=small_conv.conv_general_dilated)
  params = ours.init(jax.random.key(1), x)
  np.testing.assert_allclose(ours.apply(params, x),
                             nn.Conv(8, (3, 3), padding=1).apply(params, x), rtol=1e-5,
                             atol=1e-5)


def test_grouped_and_dilated_convolutions_stay_with_lax():
  x = jax.random.normal(jax.random.key(0), (1, 2, 2, 4))
  depthwise = lambda x, w: small_conv.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN, feature_group_count=4)
  assert "conv_general_dilated" in _primitives(depthwise, x, jnp.ones((3, 3, 1, 4)))
  dilated = lambda x, w: small_conv.conv_general_dilated(
      x, w, (1, 1), ((2, 2), (2, 2)), rhs_dilation=(2, 2), dimension_numbers=DN)
  assert "conv_general_dilated" in _primitives(dilated, x, jnp.ones((3, 3, 4, 4)))
