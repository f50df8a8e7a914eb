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

`num_classes > 0` (ours, not the paper's): a class-conditional estimator. A
learned class embedding (one latent_dim vector a class, N(0, 1) init so the
class weighs as much as the noise at the start) is added to the noise before
the first layer. Why: the unconditional estimators collapse to one teacher
class for every noise vector from their initialisation on (WORKSPACE, "the
collapse diagnosis"); with a class input each noise vector can be aimed at a
class. With `num_classes == 0` (default) the module and its parameters are
the official ones, bit for bit.
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
    num_classes: ours: > 0 makes the estimator class-conditional (`labels`
      required), 0 the official unconditional estimator.
  """

  latent_dim: int = 1000
  width: int = 224
  output_size: int = 64
  channels: int = 3
  num_classes: int = 0

  @property
  def stages(self) -> int:
    stages = round(math.log2(self.output_size / 4))
    if stages < 1 or 4 * 2**stages != self.output_size:
      raise ValueError(f"Estimator output_size={self.output_size}: must be 4 * 2**k, k >= 1 "
                       "(8, 16, 32, 64, 128, ...)")
    return stages

  @nn.compact
  def __call__(self, noise: jax.Array, labels: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """noise [B, latent_dim]; labels int[B] in [0, num_classes) for a
    class-conditional estimator, None otherwise."""
    if noise.ndim != 2 or noise.shape[1] != self.latent_dim:
      raise ValueError(f"Estimator expects noise [B, {self.latent_dim}], got {noise.shape}")
    if self.num_classes:
      if labels is None or labels.shape != noise.shape[:1]:
        raise ValueError(f"a class-conditional Estimator (num_classes={self.num_classes}) "
                         f"needs labels [{noise.shape[0]}], got "
                         f"{None if labels is None else labels.shape}")
      embed = nn.Embed(self.num_classes, self.latent_dim,
                       embedding_init=nn.initializers.normal(1.0), name="class_embedding")
      noise = noise + embed(labels)
    elif labels is not None:
      raise ValueError("labels given to an unconditional Estimator (num_classes=0)")
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
