"""Depthwise convolutions as k x k shifted multiply-adds.

XLA's CPU backend runs a depthwise convolution (`feature_group_count` = channels, as in
MobileNetV2) through a generic grouped-convolution path: a 3x3 depthwise layer of
MobileNetV2 at 64 px input took 18-118 ms forward and 38-546 ms with both gradients at batch
64, where the same sums as nine shifted slices of the padded input, each times its kernel
tap, took 0.6-4.2 ms forward and 2.1-33 ms with both gradients (18-70x and 4-45x; `/tmp`
probe of session 23 on an Intel Xeon, WORKSPACE "Depthwise convolutions"). XLA fuses the
slices, products and sums into one elementwise loop. The input gradient is the same taps
over the output gradient (dilated by the stride, the kernel flipped) and the kernel
gradient one reduction a tap (a custom VJP: as jax's own gradient of the slices, but 2.9x
faster for the input gradient through MobileNetV2 at 64 px, which XLA otherwise fused with
a recomputation of the forward).

`conv_general_dilated` has `lax.conv_general_dilated`'s signature, for
`flax.linen.Conv(conv_general_dilated=...)`: a 2-D NHWC/HWIO depthwise convolution (one
input channel a group, as many output channels as input channels, no dilation) is computed
as shifted multiply-adds (the same products; the sum's order is the taps' row-major order,
so results can differ from lax's in float32 rounding; tests/test_depthwise_conv.py);
anything else is `lax.conv_general_dilated` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import jax
from jax import lax
import jax.numpy as jnp

from sketchjax.models import small_conv
from sketchjax.models import window_taps


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
  """`lax.conv_general_dilated`; depthwise 2-D NHWC/HWIO convolutions as shifted
  multiply-adds (module doc)."""
  depthwise = (lhs.ndim == 4 and rhs.ndim == 4 and feature_group_count > 1
               and feature_group_count == lhs.shape[-1] == rhs.shape[-1] and rhs.shape[2] == 1)
  # The layout, dilation and padding checks of an ungrouped convolution, on the grouped one.
  pads = small_conv.plain_2d_pads(lhs, rhs, window_strides, padding, lhs_dilation,
                                  rhs_dilation, dimension_numbers, 1,
                                  batch_group_count) if depthwise else None
  if pads is None or precision is not None or preferred_element_type is not None:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count,
                                    precision, preferred_element_type)
  return shifted_depthwise(lhs, rhs[:, :, 0, :], tuple(window_strides),
                           tuple(tuple(p) for p in pads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def shifted_depthwise(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                      pads: tuple[tuple[int, int], ...]) -> jax.Array:
  """x [B, H, W, C], kernel [kh, kw, C], (lo, hi) padding of H and W -> [B, oh, ow, C]:
  out[b, y, x, c] = sum_ij pad(x)[b, y * sh + i, x * sw + j, c] * kernel[i, j, c]."""
  return _taps(_pad(x, pads), kernel, strides,
               window_taps.out_size(x.shape[1:3], kernel.shape[:2], strides, pads))


def _pad(x: jax.Array, pads, interior=(0, 0)) -> jax.Array:
  (top, bottom), (left, right) = pads
  return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (top, bottom, interior[0]),
                                             (left, right, interior[1]), (0, 0, 0)))


def _taps(padded: jax.Array, kernel: jax.Array, strides, out_size) -> jax.Array:
  out = None
  for i in range(kernel.shape[0]):
    for j in range(kernel.shape[1]):
      tap = window_taps.tap(padded, i, j, strides, out_size) * kernel[i, j]
      out = tap if out is None else out + tap
  return out


def _shifted_depthwise_fwd(x, kernel, strides, pads):
  return shifted_depthwise(x, kernel, strides, pads), (x, kernel)


def _shifted_depthwise_bwd(strides, pads, residuals, dy):
  """The input gradient as the same taps over dy (dilated by the stride, padded by k - 1)
  with the kernel flipped, cropped by the padding; the kernel gradient as one reduction a
  tap. dy passes an optimisation barrier, so that a backend's fusion cannot recompute the
  forward taps inside every tap of the input gradient (through the activation's mask),
  nine times the work; XLA CPU (jax 0.10) removes barriers before fusion
  (`cse_barrier_expander`) and compiles this gradient to the same program with or without
  it (WORKSPACE, "The official steps timed beside ours ... (session 27)")."""
  x, kernel = residuals
  dy = lax.optimization_barrier(dy)
  kh, kw, _ = kernel.shape
  out_size = dy.shape[1:3]
  padded_size = [size + lo + hi for size, (lo, hi) in zip(x.shape[1:3], pads)]
  dilated = [(n - 1) * s + 1 for n, s in zip(out_size, strides)]
  dy_padded = _pad(dy, ((kh - 1, padded_size[0] - dilated[0]),
                        (kw - 1, padded_size[1] - dilated[1])),
                   interior=(strides[0] - 1, strides[1] - 1))
  dx_padded = _taps(dy_padded, kernel[::-1, ::-1], (1, 1), padded_size)
  dx = _pad(dx_padded, tuple((-lo, -hi) for lo, hi in pads))
  x_padded = _pad(x, pads)
  dkernel = jnp.stack([jnp.sum(window_taps.tap(x_padded, i, j, strides, out_size) * dy,
                               axis=(0, 1, 2))
                       for i in range(kh) for j in range(kw)])
  return dx, dkernel.reshape(kernel.shape)


shifted_depthwise.defvjp(_shifted_depthwise_fwd, _shifted_depthwise_bwd)
