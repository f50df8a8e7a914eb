"""The DCGAN estimator of CrossX-DFL (spec 2.3): noise -> image in [-1, 1].

Official `Generator(nz=1000, nd=224, nc=3)`: ConvTranspose(k4, s1, p0) from the
1x1 noise to 4x4 with width*8 channels, then ConvTranspose(k4, s2, p1) stages
halving the width and doubling the side, BatchNorm + ReLU after every layer but
the last, tanh at the end; 64x64 output, 62.4 M parameters, no biases.
torch ConvTranspose2d(k, s, p) is lax.conv_transpose with padding k - 1 - p on
each side (spec 2.9), which is what flax's ConvTranspose computes with explicit
padding; `conv_transpose.ConvTranspose` computes the same with the same
parameters, as ordinary products (XLA CPU's gradient of the dilated form is
10-15x slower). `output_size` sets the number of stages (64: four, the official; 32:
three), `width` the base width (224 official; 16-32 for CPU runs).
BatchNorm is torch's (momentum 0.1 = flax 0.9, eps 1e-5); in training it uses
the batch statistics and updates "batch_stats".
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from sketchjax.models import conv_transpose


class Estimator(nn.Module):
  """noise float[B, latent_dim] -> images float32[B, output_size, output_size, channels]
  in [-1, 1].

  Attributes:
    latent_dim: noise width (official 1000).
    width: channels of the last hidden layer; the first has width * 2**(stages - 1)
      (official 224, so 1792 at 4x4).
    output_size: image side, 4 * 2**stages (official 64).
    channels: output channels (3).
  """

  latent_dim: int = 1000
  width: int = 224
  output_size: int = 64
  channels: int = 3

  @property
  def stages(self) -> int:
    stages = round(math.log2(self.output_size / 4))
    if stages < 1 or 4 * 2**stages != self.output_size:
      raise ValueError(f"Estimator output_size={self.output_size}: must be 4 * 2**k, k >= 1 "
                       "(8, 16, 32, 64, 128, ...)")
    return stages

  @nn.compact
  def __call__(self, noise: jax.Array, *, train: bool = False) -> jax.Array:
    if noise.ndim != 2 or noise.shape[1] != self.latent_dim:
      raise ValueError(f"Estimator expects noise [B, {self.latent_dim}], got {noise.shape}")
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
    features = self.width * 2**(self.stages - 1)
    x = noise[:, None, None, :]
    # conv_transpose.ConvTranspose: flax's ConvTranspose (names, init, numbers) without
    # its slow weight gradient on XLA CPU.
    layer = lambda i, features, stride: conv_transpose.ConvTranspose(  # noqa: E731
        features, stride, name=f"ConvTranspose_{i}")
    x = layer(0, features, 1)(x)
    x = nn.relu(norm()(x))
    for i in range(1, self.stages):
      features //= 2
      x = layer(i, features, 2)(x)
      x = nn.relu(norm()(x))
    x = layer(self.stages, self.channels, 2)(x)
    return jnp.tanh(x.astype(jnp.float32))
