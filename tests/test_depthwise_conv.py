"""Depthwise convolutions as shifted multiply-adds equal lax's grouped convolution."""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models import depthwise_conv

DN = ("NHWC", "HWIO", "NHWC")
# (input side, kernel, stride, padding): MobileNetV2's SAME 3x3 at stride 1 and 2 (even side:
# 0 before, 1 after), odd sides, a 2x2 map at stride 2, explicit and negative padding.
CASES = [(8, 3, 1, "SAME"), (8, 3, 2, "SAME"), (7, 3, 2, "SAME"), (2, 3, 2, "SAME"),
         (6, 5, 1, ((2, 2), (2, 2))), (9, 3, 3, "VALID"), (6, 3, 1, ((0, -1), (1, 0)))]


def _primitives(fn, *args) -> set[str]:
  return {str(e.primitive) for e in jax.make_jaxpr(fn)(*args).eqns}


@pytest.mark.parametrize("side, k, stride, padding", CASES)
def test_equals_lax_grouped_convolution_values_and_gradients(side, k, stride, padding):
  channels = 6
  x = jax.random.normal(jax.random.key(0), (3, side, side, channels))
  w = jax.random.normal(jax.random.key(1), (k, k, 1, channels))
  call = lambda conv: lambda x, w: conv(x, w, (stride, stride), padding, dimension_numbers=DN,
                                        feature_group_count=channels)
  ours, ref = call(depthwise_conv.conv_general_dilated), call(lax.conv_general_dilated)
  assert "conv_general_dilated" not in _primitives(ours, x, w)
  assert ours(x, w).shape == ref(x, w).shape
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(jax.random.key(2), ref(x, w).shape)
  grads = lambda f: jax.grad(lambda x, w: jnp.sum(f(x, w) * cotangent), argnums=(0, 1))(x, w)
  for a, b in zip(grads(ours), grads(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_as_the_convolution_of_a_flax_depthwise_conv():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 5))
  make = lambda **kw: nn.Conv(5, (3, 3), strides=2, padding="SAME", feature_group_count=5, **kw)
  ours = make(conv_general_dilated=depthwise_conv.conv_general_dilated)
  params = ours.init(jax.random.key(1), x)
  assert "conv_general_dilated" not in _primitives(lambda x: ours.apply(params, x), x)
  np.testing.assert_allclose(ours.apply(params, x), make().apply(params, x), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("groups, out_channels, rhs_dilation", [
    (1, 4, None),       # an ordinary convolution
    (2, 4, None),       # two groups of two channels
    (4, 8, None),       # depthwise with a channel multiplier of 2
    (4, 4, (2, 2))])    # dilated depthwise
def test_other_convolutions_stay_with_lax(groups, out_channels, rhs_dilation):
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 4))
  w = jnp.ones((3, 3, 4 // groups, out_channels))
  conv = lambda x, w: depthwise_conv.conv_general_dilated(
      x, w, (1, 1), "SAME", rhs_dilation=rhs_dilation, dimension_numbers=DN,
      feature_group_count=groups)
  assert "conv_general_dilated" in _primitives(conv, x, w)
