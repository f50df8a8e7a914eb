"""Convolutions whose weight gradient is a matrix product, for layers trained inside a loop.

XLA's CPU backend computes a convolution's weight gradient inside a while loop (the
micro-batch `lax.scan` of training/microbatch.py) in a generic slow path: 14-46x the time
of the same gradient outside a loop (benchmarks/scan_convolution.py; ZSE-SBIR's conv stem
made its ViT-B training step 2.3x the time of its micro-batches). Written as the k x k
patches of the input (`lax.conv_general_dilated_patches`) times the output gradient, the
same sums run at ~0.9x in a loop (1.5x XLA's own outside one).

Non-overlapping convolutions (kernel = stride, no padding: ViT's patch embedding, ZSE-SBIR's
2x2/2 anchor conv) are a reshape of the input into its patches and one matrix product, in
every pass: XLA CPU ran ZSE's anchor conv as a convolution at ~20-30 GFLOP/s against ~65 for
the same sums as a product (one thread of an Intel Xeon, session 22), and their gradients
are then products too.

`conv_general_dilated` has `lax.conv_general_dilated`'s signature, for
`flax.linen.Conv(conv_general_dilated=...)`: for NHWC/HWIO 2-D convolutions without
dilation or groups, non-overlapping ones are patches @ kernel and for the others the
forward pass and the input gradient are lax's and the weight gradient is patches^T @ dy
(the same sums, float32 rounding apart; tests/test_loop_conv.py); anything else is
`lax.conv_general_dilated` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import jax
from jax import lax
import jax.numpy as jnp

from sketchjax.models import small_conv

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
  """`lax.conv_general_dilated`, with the weight gradient as a product where it can be
  (module doc)."""
  pads = small_conv.plain_2d_pads(lhs, rhs, window_strides, padding, lhs_dilation,
                                  rhs_dilation, dimension_numbers, feature_group_count,
                                  batch_group_count)
  if pads is None or precision is not None or preferred_element_type is not None:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  if tuple(window_strides) == rhs.shape[:2] and not any(lo or hi for lo, hi in pads):
    return patch_conv(lhs, rhs)
  return _conv(lhs, rhs, tuple(window_strides), pads)


def patch_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A convolution whose stride is its kernel, unpadded: x [B, H, W, C_in], kernel
  [kh, kw, C_in, C_out] -> [B, H // kh, W // kw, C_out] as the non-overlapping patches
  [B * oh * ow, kh * kw * C_in] @ kernel (rows and columns past the last whole patch are
  dropped, as by a VALID convolution)."""
  b, h, w, c_in = x.shape
  kh, kw, _, c_out = kernel.shape
  oh, ow = h // kh, w // kw
  patches = x[:, :oh * kh, :ow * kw].reshape(b, oh, kh, ow, kw, c_in).transpose(0, 1, 3, 2, 4, 5)
  out = patches.reshape(b * oh * ow, kh * kw * c_in) @ kernel.reshape(kh * kw * c_in, c_out)
  return out.reshape(b, oh, ow, c_out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
          pads: tuple[tuple[int, int], ...]) -> jax.Array:
  """x [B, H, W, C_in], kernel [kh, kw, C_in, C_out] -> [B, oh, ow, C_out]."""
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_NHWC)


def _conv_fwd(x, kernel, strides, pads):
  return _conv(x, kernel, strides, pads), (x, kernel)


def _conv_bwd(strides, pads, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(
      lambda x: lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_NHWC), x)
  (dx,) = input_vjp(dy)
  kh, kw, c_in, c_out = kernel.shape
  patches = lax.conv_general_dilated_patches(  # [B, oh, ow, C_in * kh * kw], channel-major
      x, (kh, kw), strides, pads, dimension_numbers=_NHWC)
  dw = jnp.einsum("bhwp,bhwo->po", patches, dy.astype(patches.dtype))
  return dx, dw.reshape(c_in, kh, kw, c_out).transpose(1, 2, 0, 3).astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)
