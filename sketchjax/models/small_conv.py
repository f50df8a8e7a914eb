"""Convolutions on feature maps smaller than their kernel, as matrix products.

XLA's CPU backend computes a convolution whose output side is smaller than its kernel
(a 3x3 convolution of a 2x2 map, as ResNet-34's last stage at 64 px input) in a generic
loop: 3 GFLOP/s against ~100 for the same layer on a 4x4 map, and its input gradient
(a 3x3 stride-2 convolution of a 4x4 map: the 2x2 output gradient dilated) as slowly
(benchmarks/dfsbir_steps.py: a ResNet-34 student step at 64 px took 8x the official
PyTorch time). `conv_general_dilated` has `lax.conv_general_dilated`'s signature, for
`flax.linen.Conv(conv_general_dilated=...)`; for those small maps it computes the same
sums (float32 rounding apart; tests/test_small_conv.py) as products, elsewhere it is
`lax.conv_general_dilated` itself:
  stride 1   one product a kernel tap, of the input rows and columns that tap reads
             (`_tap_products`): a 3x3 kernel on a 2x2 map with padding 1 reads 4 of its
             9 taps' inputs at each position, so this skips the 5/9 of the patches
             product that multiplies padding (backward 9.6 -> 6.7 ms for 512 channels at
             batch 64; WORKSPACE, "The student step at the official sizes, session 25");
  strided    the k x k patches times the kernel as a [k * k * C_in, C_out] matrix.
Once `winograd.enable()` was called, 3x3 stride-1 convolutions that `winograd.applies` to are
computed on the CPU backend as Winograd F(2x2, 3x3) products (`winograd.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax
import jax.numpy as jnp

from sketchjax.models import winograd
from sketchjax.models import window_taps

_NHWC = ("NHWC", "HWIO", "NHWC")


def plain_2d_pads(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                  padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None,
                  rhs_dilation: Sequence[int] | None, dimension_numbers,
                  feature_group_count: int, batch_group_count: int
                  ) -> tuple[tuple[int, int], ...] | None:
  """For a `lax.conv_general_dilated` call that is a 2-D NHWC/HWIO convolution without
  dilation or groups, its (lo, hi) padding of each spatial side; None for any other."""
  if dimension_numbers is None or lhs.ndim != 4:
    return None
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    nhwc = dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
  else:
    nhwc = tuple(dimension_numbers) == _NHWC
  if not (nhwc and feature_group_count == 1 and batch_group_count == 1
          and all(d == 1 for d in lhs_dilation or (1, 1))
          and all(d == 1 for d in rhs_dilation or (1, 1))):
    return None
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding))
  return tuple(tuple(p) for p in padding)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
  """`lax.conv_general_dilated`; NHWC/HWIO 2-D convolutions (no dilation, one group) whose
  output is smaller than the kernel on a side are computed as products, and those
  `winograd.applies` to as Winograd products where `winograd.enabled()`."""
  pads = plain_2d_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                       dimension_numbers, feature_group_count, batch_group_count)
  if pads is not None:
    if (precision is None and preferred_element_type is None and winograd.enabled()
        and winograd.applies(lhs.shape, rhs.shape, window_strides, pads)):
      return winograd.conv3x3(lhs, rhs)
    kernel_hw = rhs.shape[:2]
    out_hw = window_taps.out_size(lhs.shape[1:3], kernel_hw, window_strides, pads)
    if min(out_hw) > 0 and any(o < k for o, k in zip(out_hw, kernel_hw)):
      if tuple(window_strides) == (1, 1):
        return _tap_products(lhs, rhs, pads, out_hw, precision, preferred_element_type)
      return _patches_matmul(lhs, rhs, window_strides, pads, out_hw, precision,
                             preferred_element_type)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)


def _tap_products(x: jax.Array, kernel: jax.Array, pads: Sequence[tuple[int, int]],
                  out_hw: Sequence[int], precision, preferred_element_type) -> jax.Array:
  """Stride 1: x [B, H, W, C_in], kernel [kh, kw, C_in, C_out] -> [B, oh, ow, C_out], the sum
  over taps (i, j) of the outputs whose input x[o + i - lo] lies inside x, times kernel[i, j]."""
  def reads(tap: int, lo: int, size: int, out: int) -> tuple[int, int]:
    """The outputs [first, stop) at which kernel offset `tap` reads inside the input."""
    return max(0, lo - tap), min(out, size + lo - tap)

  out = jnp.zeros((x.shape[0], *out_hw, kernel.shape[-1]),
                  preferred_element_type or jnp.result_type(x, kernel))
  for i in range(kernel.shape[0]):
    rows = reads(i, pads[0][0], x.shape[1], out_hw[0])
    for j in range(kernel.shape[1]):
      cols = reads(j, pads[1][0], x.shape[2], out_hw[1])
      if rows[0] >= rows[1] or cols[0] >= cols[1]:
        continue  # this tap reads only padding
      region = x[:, rows[0] + i - pads[0][0]:rows[1] + i - pads[0][0],
                 cols[0] + j - pads[1][0]:cols[1] + j - pads[1][0]]
      product = jnp.matmul(region, kernel[i, j], precision=precision,
                           preferred_element_type=preferred_element_type)
      out = out + jnp.pad(product, ((0, 0), (rows[0], out_hw[0] - rows[1]),
                                    (cols[0], out_hw[1] - cols[1]), (0, 0)))
  return out


def _patches_matmul(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                    pads: Sequence[tuple[int, int]], out_hw: Sequence[int], precision,
                    preferred_element_type) -> jax.Array:
  """x [B, H, W, C_in], kernel [kh, kw, C_in, C_out] -> [B, oh, ow, C_out]."""
  (kh, kw) = kernel.shape[:2]
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  patches = jnp.concatenate(
      [window_taps.tap(x, i, j, strides, out_hw)
       for i in range(kh) for j in range(kw)], axis=-1)  # [B, oh, ow, kh * kw * C_in]
  return jnp.matmul(patches, kernel.reshape(-1, kernel.shape[-1]), precision=precision,
                    preferred_element_type=preferred_element_type)
