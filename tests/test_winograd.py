"""Winograd F(2x2, 3x3) convolutions: values and both gradients against lax's convolution,
which shapes take the path, and small_conv's dispatch to it."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models import small_conv
from sketchjax.models import winograd

NHWC = ("NHWC", "HWIO", "NHWC")


def direct(x, k):
  return lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)


@pytest.mark.parametrize("shape, c_out", [((2, 4, 6, 3), 5), ((3, 2, 2, 8), 8),
                                          ((4, 8, 8, 16), 12)])
def test_values_and_gradients_equal_lax(shape, c_out):
  with jax.enable_x64(True):
    _check_float64_parity(shape, c_out)


def _check_float64_parity(shape, c_out):
  x = jax.random.normal(jax.random.key(0), shape, jnp.float64)
  k = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], c_out), jnp.float64)
  dy = jax.random.normal(jax.random.key(2), (*shape[:3], c_out), jnp.float64)
  np.testing.assert_allclose(winograd.conv3x3(x, k), direct(x, k), rtol=1e-12, atol=1e-12)
  for ours, theirs in zip(jax.vjp(winograd.conv3x3, x, k)[1](dy), jax.vjp(direct, x, k)[1](dy)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_float32_error_is_rounding():
  x = jax.random.normal(jax.random.key(0), (8, 4, 4, 256))
  k = jax.random.normal(jax.random.key(1), (3, 3, 256, 256)) / 48
  ours = np.asarray(winograd.conv3x3(x, k), np.float64)
  with jax.enable_x64(True):
    reference = np.asarray(direct(jnp.asarray(x, jnp.float64), jnp.asarray(k, jnp.float64)))
  assert np.max(np.abs(ours - reference)) / np.max(np.abs(reference)) < 1e-5


def test_second_derivatives_are_the_convolutions():
  """jax.grad of a loss of the gradient (as input-gradient penalties need) goes through the
  custom VJP's own products."""
  with jax.enable_x64(True):
    _check_second_derivatives()


def _check_second_derivatives():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3), jnp.float64)
  k = jax.random.normal(jax.random.key(1), (3, 3, 3, 2), jnp.float64)
  penalty = lambda conv: lambda k: jnp.sum(jax.grad(lambda x: jnp.sum(conv(x, k) ** 2))(x) ** 2)
  np.testing.assert_allclose(jax.grad(penalty(winograd.conv3x3))(k),
                             jax.grad(penalty(direct))(k), rtol=1e-10)


@pytest.mark.parametrize("lhs, rhs, strides, pads, takes", [
    ((64, 8, 8, 128), (3, 3, 128, 128), (1, 1), ((1, 1), (1, 1)), True),
    ((64, 4, 4, 256), (3, 3, 256, 256), (1, 1), ((1, 1), (1, 1)), True),
    ((64, 16, 16, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)), False),     # 64 channels
    ((32, 28, 28, 128), (3, 3, 128, 128), (1, 1), ((1, 1), (1, 1)), False),  # many tiles
    ((64, 7, 7, 256), (3, 3, 256, 256), (1, 1), ((1, 1), (1, 1)), False),    # odd side
    ((64, 8, 8, 128), (3, 3, 128, 256), (2, 2), ((1, 1), (1, 1)), False),    # stride 2
    ((64, 8, 8, 128), (1, 1, 128, 128), (1, 1), ((0, 0), (0, 0)), False),    # 1x1
    ((64, 8, 8, 128), (3, 3, 128, 128), (1, 1), ((0, 0), (0, 0)), False),    # no padding
])
def test_applies_to_the_measured_wins_only(lhs, rhs, strides, pads, takes):
  assert winograd.applies(lhs, rhs, strides, pads) == takes


@pytest.fixture
def winograd_on():
  winograd.enable(True)
  yield
  winograd.enable(False)


def _traced_convolutions(x, k):
  conv = lambda x, k: small_conv.conv_general_dilated(x, k, (1, 1), "SAME",
                                                      dimension_numbers=NHWC)
  jaxpr = jax.make_jaxpr(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), (0, 1)))(x, k)
  return str(jaxpr).count("conv_general_dilated")


def test_small_conv_takes_the_path_only_when_enabled(winograd_on):
  x, k = jnp.ones((2, 4, 4, 128)), jnp.ones((3, 3, 128, 128))
  assert winograd.enabled()
  assert _traced_convolutions(x, k) == 0
  assert _traced_convolutions(jnp.ones((2, 4, 4, 64)), jnp.ones((3, 3, 64, 64))) > 0
  winograd.enable(False)
  assert _traced_convolutions(x, k) > 0
