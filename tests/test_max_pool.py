"""Max-pooling as shifted maxima: flax's values and gradients, ties to the first window tap."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models import max_pool

# (input side, window, stride, padding)
CASES = [(32, 3, 2, ((1, 1), (1, 1))),   # ResNet's stem pool at 64 px
         (7, 3, 2, ((1, 1), (1, 1))),    # odd side
         (6, 2, 2, ((0, 0), (0, 0))),    # doodleNet's 2x2/2
         (5, 3, 1, ((1, 0), (2, 1)))]    # stride 1, uneven pads


@pytest.mark.parametrize("side, k, stride, padding", CASES)
def test_equals_flax_max_pool_values_and_gradients(side, k, stride, padding):
  # Distinct values (no ties), so the gradient's routing is unambiguous.
  x = jax.random.permutation(jax.random.key(0), jnp.arange(2 * side * side * 3.0)
                             ).reshape(2, side, side, 3) / 10
  ours = lambda x: max_pool.max_pool(x, (k, k), (stride, stride), padding)
  ref = lambda x: nn.max_pool(x, (k, k), (stride, stride), padding=padding)
  np.testing.assert_array_equal(ours(x), ref(x))
  cotangent = jax.random.normal(jax.random.key(1), ref(x).shape)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * cotangent))(x)
  np.testing.assert_allclose(grad(jax.jit(ours)), grad(ref), rtol=1e-6, atol=1e-6)


def test_tied_maximum_takes_the_first_tap_of_the_window():
  # One 3x3 window (pad 0) whose maximum 5 sits at taps (0, 2) and (2, 0): row-major
  # order reaches (0, 2) first, which gets the whole cotangent.
  x = jnp.array([[1., 2., 5.], [0., 3., 1.], [5., 4., 2.]])[None, :, :, None]
  grad = jax.grad(lambda x: 7.0 * max_pool.max_pool(x, (3, 3), (1, 1), ((0, 0), (0, 0))).sum())(x)
  expected = np.zeros((3, 3))
  expected[0, 2] = 7.0
  np.testing.assert_array_equal(grad[0, :, :, 0], expected)
