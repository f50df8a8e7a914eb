"""The DCGAN's transposed convolutions as ordinary products equal flax's ConvTranspose:
same parameters and init, same outputs and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models import conv_transpose

CASES = [(1, (2, 1, 1, 7), 5, ((3, 3), (3, 3))),  # noise projection
         (2, (2, 3, 3, 4), 6, ((2, 2), (2, 2))),  # an odd side, one product a phase
         (2, (1, 8, 8, 3), 2, ((2, 2), (2, 2)))]  # one product for all phases


@pytest.mark.parametrize("stride, shape, features, padding", CASES)
def test_equals_flax_conv_transpose_values_gradients_and_init(stride, shape, features, padding):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = conv_transpose.ConvTranspose(features, stride)
  flax_ = nn.ConvTranspose(features, (4, 4), (stride, stride), padding=padding, use_bias=False)
  params = ours.init(jax.random.key(1), x)
  reference_params = flax_.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, params, reference_params)  # same init

  out, reference = ours.apply(params, x), flax_.apply(params, x)
  assert out.shape == reference.shape == (shape[0], 4 if stride == 1 else 2 * shape[1],
                                          4 if stride == 1 else 2 * shape[2], features)
  np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)

  weights = jax.random.normal(jax.random.key(2), out.shape)
  grads = lambda module: jax.grad(lambda p, x: jnp.sum(module.apply(p, x) * weights),
                                  argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               grads(ours), grads(flax_))


def test_a_single_tap_lands_where_the_transposed_convolution_puts_it():
  """Hand-worked: one input pixel and one kernel tap (t_h, t_w) of a k4 s2 p1 layer
  lands at output (2 i - t_h + 2, 2 j - t_w + 2): the dilated-input convolution
  out[o] = sum_t dilated[o + t - 2] kernel[t] with dilated[2 i] = x[i]."""
  x = jnp.zeros((1, 3, 3, 1)).at[0, 1, 2, 0].set(1.0)
  kernel = jnp.zeros((4, 4, 1, 1)).at[3, 1, 0, 0].set(2.0)
  out = conv_transpose.upsample_subpixel(x, kernel)[0, :, :, 0]
  expected = np.zeros((6, 6))
  expected[2 * 1 - 3 + 2, 2 * 2 - 1 + 2] = 2.0
  np.testing.assert_array_equal(out, expected)


def test_bad_input():
  with pytest.raises(ValueError, match="1x1 inputs"):
    conv_transpose.ConvTranspose(3, 1).init(jax.random.key(0), jnp.zeros((1, 2, 2, 3)))
  with pytest.raises(ValueError, match="stride must be 1 or 2"):
    conv_transpose.ConvTranspose(3, 3).init(jax.random.key(0), jnp.zeros((1, 2, 2, 3)))
