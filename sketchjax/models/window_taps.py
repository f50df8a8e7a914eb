"""The geometry of a strided k x k window over an NHWC map, and its shifted slices.

Shared by the convolutions and pools that compute a window as k x k shifted slices of the
padded input ("taps"): `small_conv`, `depthwise_conv`, `max_pool`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax


def out_size(spatial: Sequence[int], window: Sequence[int], strides: Sequence[int],
             pads: Sequence[Sequence[int]]) -> tuple[int, int]:
  """Output (height, width) of `window` sliding over `spatial` (H, W) with (lo, hi) pads."""
  return tuple((size + lo + hi - k) // s + 1
               for size, k, s, (lo, hi) in zip(spatial, window, strides, pads))


def tap(padded: jax.Array, i: int, j: int, strides: Sequence[int],
        out_hw: Sequence[int]) -> jax.Array:
  """The padded input under window offset (i, j) at every output position: padded
  [B, H + pads, W + pads, C] -> [B, oh, ow, C], element (y, x) = padded[:, i + sh y, j + sw x]."""
  (sh, sw), (oh, ow) = strides, out_hw
  b, _, _, c = padded.shape
  return lax.slice(padded, (0, i, j, 0), (b, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c),
                   (1, sh, sw, 1))
