"""Max-pooling as shifted maxima, with its own gradient.

`flax.linen.max_pool` is `lax.reduce_window`, whose gradient XLA CPU computes with a
select-and-scatter over an index map of the padded input (for ResNet's 3x3/2 stem pool
at 64 px and batch 64, an int32 [64, 34, 34, 64] iota and a variadic reduce-window: 57-69
ms a gradient, against 13-15 ms for the taps below; WORKSPACE, "The student step at the
official sizes, session 25"). `max_pool` takes the k x k strided slices of the padded
input ("taps") and their running maximum; its gradient sends each output's cotangent to
the first tap, in row-major window order, that equals the maximum (PyTorch's choice, and
jax's up to ties: where two taps hold the same maximum, jax may pick another one of them).
After a ReLU most ties are zeros, whose gradient the ReLU drops either way; a tie of equal
positive values (a flat image region) gets one of two equally valid subgradients.
"""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp

from sketchjax.models import window_taps


def _taps(padded: jax.Array, window: tuple[int, int], strides: tuple[int, int],
          out_hw: tuple[int, int]) -> list[tuple[int, int, jax.Array]]:
  """(i, j, the padded input under window offset (i, j)) for every offset."""
  return [(i, j, window_taps.tap(padded, i, j, strides, out_hw))
          for i in range(window[0]) for j in range(window[1])]


def _geometry(x: jax.Array, window, strides, padding):
  """(x padded with -inf [B, H + pads, W + pads, C], output side (H', W'))."""
  padded = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
  return padded, window_taps.out_size(x.shape[1:3], window, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
             padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """x [B, H, W, C] -> [B, H', W', C]: the maximum of each window (pads count as -inf),
  as `flax.linen.max_pool(x, window, strides, padding)` with explicit (lo, hi) pads."""
  padded, out_hw = _geometry(x, window, strides, padding)
  out = None
  for _, _, tap in _taps(padded, window, strides, out_hw):
    out = tap if out is None else jnp.maximum(out, tap)
  return out


def _forward(x, window, strides, padding):
  out = max_pool(x, window, strides, padding)
  return out, (x, out)


def _backward(window, strides, padding, residuals, cotangent):
  x, out = residuals
  padded, out_hw = _geometry(x, window, strides, padding)
  (sh, sw), (oh, ow) = strides, out_hw
  taken = jnp.zeros(out.shape, bool)
  grad = jnp.zeros(padded.shape, cotangent.dtype)
  zero = jnp.zeros((), cotangent.dtype)
  for i, j, tap in _taps(padded, window, strides, out_hw):
    first = (tap == out) & ~taken
    taken = taken | first
    # Back to the padded grid: interior padding s - 1 puts output (p, q) at (i + s p, j + s q).
    grad = grad + lax.pad(jnp.where(first, cotangent, zero), zero,
                          ((0, 0, 0), (i, padded.shape[1] - i - sh * (oh - 1) - 1, sh - 1),
                           (j, padded.shape[2] - j - sw * (ow - 1) - 1, sw - 1), (0, 0, 0)))
  (top, _), (left, _) = padding
  return (grad[:, top:top + x.shape[1], left:left + x.shape[2]],)


max_pool.defvjp(_forward, _backward)
