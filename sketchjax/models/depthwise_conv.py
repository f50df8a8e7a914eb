"""Depthwise convolutions as k x k shifted multiply-adds.

XLA's CPU backend runs a depthwise convolution (`feature_group_count` = channels, as in
MobileNetV2) through a generic grouped-convolution path: a 3x3 depthwise layer of
MobileNetV2 at 64 px input took 20-120 ms forward and 30-550 ms with its gradients at batch
64, where the same sums as nine shifted slices of the padded input, each times its kernel
tap, took 0.6-4 ms forward and 2-33 ms with both gradients (`/tmp` probe of session 23 on an
Intel Xeon, WORKSPACE "Depthwise convolutions"). XLA fuses the slices, products and sums
into one elementwise loop, and the gradients are those of slices and products: pads, sums
and per-tap reductions.

`conv_general_dilated` has `lax.conv_general_dilated`'s signature, for
`flax.linen.Conv(conv_general_dilated=...)`: a 2-D NHWC/HWIO depthwise convolution (one
input channel a group, as many output channels as input channels, no dilation) is computed
as shifted multiply-adds (the same products; the sum's order is the taps' row-major order,
so results can differ from lax's in float32 rounding; tests/test_depthwise_conv.py);
anything else is `lax.conv_general_dilated` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax
import jax.numpy as jnp

from sketchjax.models import small_conv


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
  return shifted_depthwise(lhs, rhs[:, :, 0, :], tuple(window_strides), pads)


def shifted_depthwise(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                      pads: Sequence[tuple[int, int]]) -> jax.Array:
  """x [B, H, W, C], kernel [kh, kw, C], (lo, hi) padding of H and W -> [B, oh, ow, C]:
  out[b, y, x, c] = sum_ij pad(x)[b, y * sh + i, x * sw + j, c] * kernel[i, j, c]."""
  b, h, w, c = x.shape
  kh, kw, _ = kernel.shape
  (top, bottom), (left, right) = pads
  sh, sw = strides
  oh = (h + top + bottom - kh) // sh + 1
  ow = (w + left + right - kw) // sw + 1
  padded = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (top, bottom, 0), (left, right, 0),
                                               (0, 0, 0)))
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = lax.slice(padded, (0, i, j, 0), (b, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c),
                      (1, sh, sw, 1)) * kernel[i, j]
      out = tap if out is None else out + tap
  return out
