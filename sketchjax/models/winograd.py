"""3x3 stride-1 convolutions as Winograd F(2x2, 3x3) products (Lavin & Gray, CVPR 2016).

Each 2x2 output tile of a 3x3 convolution with padding 1 is A^T [(G k G^T) * (B^T d B)] A
for the tile's 4x4 input window d: 16 products of [tiles, C_in] @ [C_in, C_out] (one per
entry of the transformed 4x4 window) in place of 9 taps over 4 outputs each, 2.25x fewer
multiplications. The forward and both gradients are those products (a custom VJP: the
input gradient is the same transform of the output gradient with the kernel's transformed
taps permuted and transposed, the kernel gradient is 16 products [C_in, tiles] @ [tiles,
C_out] taken back through G), plus elementwise transforms. Values equal the direct
convolution up to float rounding (relative ~1e-6 in float32; tests/test_winograd.py).

On XLA's CPU backend (2-core Xeon, batch 64, forward and both gradients) this is faster
than XLA's convolution where the products are small: ResNet-34's 8x8 x 128 and 4x4 x 256
stages at 64 px 7.9 / 7.3 ms against 9.6 / 9.7 ms, the CrossX-DFL official-size student
step 1.27 -> 1.20 s in one process, 0-5% between benchmark runs (WORKSPACE, "... session 26:
page faults and Winograd products"); slower at 16x16 x 64 (27 against 13 ms)
and 28x28 x 128 (86 against 60 ms at batch 32), where the kernel gradient's products over
many tiles run slowly. `applies` admits the measured wins only. small_conv's
`conv_general_dilated` takes this path on the CPU backend once `enable()` was called
(`python -m sketchjax.main --cpu_convolutions=winograd`), in programs traced after the call.
Ours, not the official code's (which runs PyTorch's convolutions): the same sums otherwise.
"""

from __future__ import annotations

import jax
from jax import lax
import jax.numpy as jnp

MIN_CHANNELS = 128  # fewer input or output channels: XLA's convolution was faster
MAX_TILES = 1024    # batch * (H / 2) * (W / 2) above this: XLA's convolution was faster
# G applied to a kernel flipped along one axis: G's rows in this order.
_FLIP = (3, 1, 2, 0)
_enabled = False


def enable(on: bool = True) -> None:
  """Turns the CPU path of `small_conv.conv_general_dilated` on or off (off at import)."""
  global _enabled
  _enabled = on


def enabled() -> bool:
  """Whether convolutions traced now on the CPU backend take this path where it `applies`."""
  return _enabled and jax.default_backend() == "cpu"


def applies(lhs_shape, rhs_shape, strides, pads) -> bool:
  """Whether an NHWC/HWIO convolution (`pads` its (lo, hi) spatial padding) is one this
  module computes faster: 3x3, stride 1, padding 1, even map sides, >= MIN_CHANNELS
  channels in and out, at most MAX_TILES 2x2 tiles."""
  n, h, w, c_in = lhs_shape
  return (tuple(rhs_shape[:2]) == (3, 3) and tuple(strides) == (1, 1)
          and tuple(map(tuple, pads)) == ((1, 1), (1, 1)) and h % 2 == 0 and w % 2 == 0
          and min(c_in, rhs_shape[3]) >= MIN_CHANNELS and n * (h // 2) * (w // 2) <= MAX_TILES)


def _pairs(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  """The even and the odd entries along `axis` (even size 2T) -> 2 arrays, size T."""
  pairs = x.reshape(x.shape[:axis] + (x.shape[axis] // 2, 2) + x.shape[axis + 1:])
  return (lax.index_in_dim(pairs, 0, axis + 1, keepdims=False),
          lax.index_in_dim(pairs, 1, axis + 1, keepdims=False))


def _windows(x: jax.Array, axis: int) -> list[jax.Array]:
  """B^T of the 4-long windows at stride 2 along `axis` (size 2T + 2) -> 4 arrays, size T."""
  t = (x.shape[axis] - 2) // 2
  even, odd = _pairs(x, axis)
  e0, e1 = lax.slice_in_dim(even, 0, t, axis=axis), lax.slice_in_dim(even, 1, t + 1, axis=axis)
  o0, o1 = lax.slice_in_dim(odd, 0, t, axis=axis), lax.slice_in_dim(odd, 1, t + 1, axis=axis)
  return [e0 - e1, o0 + e1, e1 - o0, o0 - o1]


def _g(k: jax.Array) -> list[jax.Array]:
  """G [4, 3] along the leading axis of k [3, ...] -> 4 arrays [...]."""
  k0, k1, k2 = k[0], k[1], k[2]
  return [k0, 0.5 * (k0 + k1 + k2), 0.5 * (k0 - k1 + k2), k2]


def _g_t(u: list[jax.Array]) -> list[jax.Array]:
  """G^T [3, 4] of 4 arrays -> 3."""
  return [u[0] + 0.5 * (u[1] + u[2]), 0.5 * (u[1] - u[2]), 0.5 * (u[1] + u[2]) + u[3]]


def _a_t(m: list[jax.Array]) -> list[jax.Array]:
  """A^T [2, 4] of 4 arrays -> 2."""
  return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def _a(y: jax.Array, axis: int) -> list[jax.Array]:
  """A [4, 2] of the consecutive pairs along `axis` (size 2T) -> 4 arrays, size T."""
  y0, y1 = _pairs(y, axis)
  return [y0, y0 + y1, y0 - y1, -y1]


def _input_tiles(x: jax.Array) -> list[jax.Array]:
  """x [B, H, W, C] -> 16 (entry p * 4 + q of B^T d B) x [B * H/2 * W/2, C]."""
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [v.reshape(-1, x.shape[-1]) for rows in _windows(padded, 1) for v in _windows(rows, 2)]


def _kernel_tiles(k: jax.Array) -> list[jax.Array]:
  """k [3, 3, C_in, C_out] -> 16 (entry p * 4 + q of G k G^T) x [C_in, C_out]."""
  return [u for rows in _g(k) for u in _g(rows)]


def _output(m: list[jax.Array], shape: tuple[int, ...]) -> jax.Array:
  """A^T M A of the 16 products [B * H/2 * W/2, C_out] -> y [B, H, W, C_out]."""
  b, h, w = shape[:3]
  m = [mt.reshape(b, h // 2, w // 2, -1) for mt in m]
  by_column = [_a_t([m[4 * p + q] for p in range(4)]) for q in range(4)]  # [q][i]
  y = [_a_t([by_column[q][i] for q in range(4)]) for i in range(2)]  # [i][j]: [B, H/2, W/2, C]
  return jnp.stack([jnp.stack(yi, axis=3) for yi in y], axis=2).reshape(b, h, w, -1)


def _output_transposed(dy: jax.Array) -> list[jax.Array]:
  """The transpose of `_output`: dy [B, H, W, C_out] -> 16 x [B * H/2 * W/2, C_out]."""
  return [v.reshape(-1, dy.shape[-1]) for rows in _a(dy, 1) for v in _a(rows, 2)]


def _forward(x: jax.Array, k: jax.Array):
  v, u = _input_tiles(x), _kernel_tiles(k)
  return _output([vt @ ut for vt, ut in zip(v, u)], x.shape), (v, u)


@jax.custom_vjp
def conv3x3(x: jax.Array, k: jax.Array) -> jax.Array:
  """x [B, H, W, C_in] (H, W even), k [3, 3, C_in, C_out] -> [B, H, W, C_out]: the 3x3
  convolution with stride 1 and padding 1 (lax.conv_general_dilated, NHWC / HWIO)."""
  return _forward(x, k)[0]


def _backward(residuals, dy: jax.Array):
  """dx: the forward's sums on dy with the kernel flipped and its channels swapped, whose
  transformed taps are u's permuted by _FLIP and transposed; dk: G^T (V^T dM) G."""
  v, u = residuals
  flipped = [u[4 * _FLIP[p] + _FLIP[q]] for p in range(4) for q in range(4)]
  dx = _output([vt @ ut.T for vt, ut in zip(_input_tiles(dy), flipped)], dy.shape)
  du = [vt.T @ dmt for vt, dmt in zip(v, _output_transposed(dy))]
  by_column = [_g_t([du[4 * p + q] for p in range(4)]) for q in range(4)]  # [q][i]
  dk = jnp.stack([jnp.stack(_g_t([by_column[q][i] for q in range(4)])) for i in range(3)])
  return dx, dk


conv3x3.defvjp(_forward, _backward)
