"""ResNet-18-style CNN for single-channel sketch images, with GroupNorm.

Deviation from torchvision's ResNet-18: GroupNorm replaces BatchNorm, so the
model has no mutable batch statistics and is used as a pure
`apply(params, images)` (identical in training and evaluation, independent
of the batch split across devices). Otherwise the torchvision layout: 7x7/2
stem conv + 3x3/2 max-pool, four stages of basic blocks (the first block of
stages 2-4 strides by 2 with a 1x1 projection shortcut), global average pool,
Dense head; convolutions He-normal (fan out) without bias.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
Conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init)


def group_norm(channels: int, groups: int, name: str) -> nn.GroupNorm:
  """GroupNorm with the largest group count <= `groups` that divides `channels`."""
  return nn.GroupNorm(num_groups=math.gcd(groups, channels), epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
  """conv3x3-GN-ReLU-conv3x3-GN + shortcut, ReLU: [B, H, W, C] -> [B, H/s, W/s, width]."""

  width: int
  stride: int = 1
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = Conv(self.width, (3, 3), (self.stride, self.stride), padding=1, name="conv1")(x)
    y = nn.relu(group_norm(self.width, self.norm_groups, "norm1")(y))
    y = Conv(self.width, (3, 3), padding=1, name="conv2")(y)
    y = group_norm(self.width, self.norm_groups, "norm2")(y)
    if self.stride != 1 or x.shape[-1] != self.width:
      x = Conv(self.width, (1, 1), (self.stride, self.stride), name="shortcut_conv")(x)
      x = group_norm(self.width, self.norm_groups, "shortcut_norm")(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet-18-style classifier for float[B, H, W, 1] images.

  Attributes:
    num_classes: output classes.
    widths: channels of the four stages.
    blocks: basic blocks per stage.
    norm_groups: GroupNorm groups (reduced to a divisor of each width).
  """

  num_classes: int
  widths: Sequence[int] = (64, 128, 256, 512)
  blocks: Sequence[int] = (2, 2, 2, 2)
  norm_groups: int = 32

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """float[B, H, W, 1] -> (logits float32[B, C], {"features": [B, widths[-1]], "logits"})."""
    if images.ndim != 4:
      raise ValueError(f"ResNet18 expects images [B, H, W, C], got shape {images.shape}")
    x = Conv(self.widths[0], (7, 7), (2, 2), padding=3, name="stem_conv")(images)
    x = nn.relu(group_norm(self.widths[0], self.norm_groups, "stem_norm")(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, (width, count) in enumerate(zip(self.widths, self.blocks)):
      for block in range(count):
        stride = 2 if stage > 0 and block == 0 else 1
        name = f"stage{stage + 1}_block{block + 1}"
        x = BasicBlock(width, stride, self.norm_groups, name=name)(x)
    features = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, name="head")(features)
    return logits, {"features": features, "logits": logits}
