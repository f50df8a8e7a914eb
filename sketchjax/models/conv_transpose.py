"""The DCGAN's two transposed convolutions, without XLA's input-dilated convolution.

`flax.linen.ConvTranspose` is `lax.conv_transpose`: a convolution over the input dilated
with zeros. XLA's CPU backend computes the weight gradient of that convolution in a
generic loop, 10-15x slower than its forward (benchmarks/dfsbir_steps.py, k4 s2 at the
official widths: 6-10 GFLOP/s against ~100 forward). The two kinds of layer the DCGAN
estimator uses are computed here as ordinary products, with the same parameter (kernel
[k, k, C_in, C_out], flax's layout and default init) and the same numbers as
`nn.ConvTranspose` within float32 rounding (tests/test_conv_transpose.py):

  stride 1 on a 1x1 input, padding k - 1 (the noise -> 4x4 projection): each output
    pixel is the input times one kernel tap, an einsum with the kernel flipped;
  kernel 4, stride 2, padding 2 (torch's k4 s2 p1, the doubling stages): sub-pixel
    form. Output pixel (2m + a, 2n + b) sums taps (2r + a, 2s + b) over the 2x2 input
    window (m - 1 + a + r, n - 1 + b + s), r, s in {0, 1}; so one 2x2 VALID convolution
    of the once-padded input to 4 C_out channels (a kernel reshape, no zeros) gives all
    four phases, interleaved after. It is computed as the 2x2 patches times the phase
    kernels, matrix products (gradients too): on maps up to 6 x 6 each phase at its
    own S x S windows (the transposed convolution's FLOPs), on larger maps all phases
    at all (S + 1)^2 windows in one wider product ((S + 1)^2 / S^2 the FLOPs, 1.27x at
    8, 1.06x at 32), which XLA CPU runs as fast or faster there (for the 3-channel
    output layer 3x faster).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


SEPARATE_PHASES_UP_TO = 6  # map side up to which each phase gets its own product


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose(features, (4, 4), (stride, stride), padding=p, use_bias=False)` with
  p = ((3, 3), (3, 3)) for stride 1 (1x1 inputs only) and ((2, 2), (2, 2)) for stride 2.

  x float[B, S, S, C_in] -> [B, 4, 4, features] (stride 1, S = 1) or [B, 2S, 2S, features].
  """

  features: int
  stride: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.linear.default_kernel_init,
                        (4, 4, x.shape[-1], self.features))
    if self.stride == 1:
      if x.shape[1:3] != (1, 1):
        raise ValueError(f"ConvTranspose(stride=1) takes 1x1 inputs, got {x.shape}")
      return jnp.einsum("bk,ijkc->bijc", x[:, 0, 0], kernel[::-1, ::-1])
    if self.stride != 2:
      raise ValueError(f"ConvTranspose: stride must be 1 or 2, got {self.stride}")
    return upsample_subpixel(x, kernel)


def upsample_subpixel(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The k4 s2 (padding 2) transposed convolution of x [B, S, S, C_in] with kernel
  [4, 4, C_in, C_out] -> [B, 2S, 2S, C_out] (module doc)."""
  batch, side, _, c_in = x.shape
  c_out = kernel.shape[-1]
  # kernel[2r + a, 2s + b] -> phase kernels [(r, s, C_in), a, b, C_out]
  phases = kernel.reshape(2, 2, 2, 2, c_in, c_out).transpose(0, 2, 4, 1, 3, 5).reshape(
      4 * c_in, 2, 2, c_out)
  # The 2x2 windows as patches times the phase kernels, matrix products (XLA CPU's own
  # convolution computes the weight gradient of a 2x2 VALID convolution in its slow
  # generic loop).
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate([padded[:, r:r + side + 1, s:s + side + 1]
                             for r in (0, 1) for s in (0, 1)], axis=-1)
  if side <= SEPARATE_PHASES_UP_TO:  # each phase at its own S x S windows
    phase = lambda a, b: patches[:, a:a + side, b:b + side] @ phases[:, a, b]  # noqa: E731
  else:  # every phase at all (S + 1)^2 windows in one wider product, then sliced
    y = (patches @ phases.reshape(4 * c_in, 4 * c_out)).reshape(
        batch, side + 1, side + 1, 2, 2, c_out)
    phase = lambda a, b: y[:, a:a + side, b:b + side, a, b]  # noqa: E731
  # output (2m + a, 2n + b) is window (m + a, n + b), phase (a, b)
  rows = [jnp.stack([phase(a, b) for b in (0, 1)], axis=3)
          for a in (0, 1)]  # each [B, S, S, 2 (b), C_out]
  return jnp.stack(rows, axis=2).reshape(batch, 2 * side, 2 * side, c_out)
