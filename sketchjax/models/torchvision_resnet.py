"""ResNet-18 / ResNet-34 in the torchvision layout, with BatchNorm.

The torchvision `resnet18` / `resnet34` networks: 7x7/2 stem conv + BN + ReLU,
3x3/2 max-pool, four stages of BasicBlocks ([2, 2, 2, 2] / [3, 4, 6, 3]; the
first block of stages 2-4 strides by 2 with a 1x1 conv + BN downsample),
global average pool, optional fc. Input: float[B, H, W, 3] normalised as
torchvision's ImageNet weights expect ((x - mean) / std of [0, 1] images,
`IMAGENET_MEAN` / `IMAGENET_STD`); any H, W (the pool is global).

Module names follow torchvision's state-dict keys with "." -> "_" (`conv1`,
`bn1`, `layer1_0/conv1`, `layer2_0/downsample_0`, `fc`), so a checkpoint maps
1:1 (`pretrained_weights.load_torchvision_resnet`). BatchNorm: eps 1e-5,
momentum 0.9 (torch's momentum 0.1); its running statistics are the
"batch_stats" collection (`train=True` needs `mutable=["batch_stats"]`). One
difference from torch: the running variance is updated with the biased batch
variance (torch uses the unbiased one), as every Flax BatchNorm does.
Initialisation as torchvision: convs He-normal (fan out), BN scale 1 bias 0,
fc U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sketchjax.models import max_pool
from sketchjax.models import small_conv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# small_conv: the last stages' maps are smaller than 3x3 at small inputs (2x2 at 64 px),
# where XLA CPU's convolution is ~40x slower than the same sums as one product.
Conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init,
                         conv_general_dilated=small_conv.conv_general_dilated)


def _torch_linear_bias_init(fan_in: int):
  """torch.nn.Linear's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU: [B, H, W, C] -> [B, H/s, W/s, width]."""

  width: int
  stride: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    stride = (self.stride, self.stride)
    y = Conv(self.width, (3, 3), stride, padding=1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = Conv(self.width, (3, 3), padding=1, dtype=self.dtype, name="conv2")(y)
    y = norm(name="bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.width:
      x = Conv(self.width, (1, 1), stride, dtype=self.dtype, name="downsample_0")(x)
      x = norm(name="downsample_1")(x)
    return nn.relu(x + y)


class TorchvisionResNet(nn.Module):
  """torchvision ResNet with BasicBlocks.

  Attributes:
    stage_sizes: BasicBlocks per stage ((2, 2, 2, 2) ResNet-18, (3, 4, 6, 3) ResNet-34).
    num_classes: width of the fc head; None for no head (a feature extractor).
    widths: channels of the four stages.
    dtype: compute dtype (parameters stay float32).
  """

  stage_sizes: Sequence[int]
  num_classes: int | None = 1000
  widths: Sequence[int] = (64, 128, 256, 512)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """float[B, H, W, 3] -> (logits [B, num_classes], or pooled [B, 512] without a head;
    {"feature_map": [B, ~H/32, ~W/32, 512], "pooled": [B, 512], "logits" with a head})."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"TorchvisionResNet expects images [B, H, W, 3], got shape {images.shape}")
    x = Conv(self.widths[0], (7, 7), (2, 2), padding=3, dtype=self.dtype, name="conv1")(images)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="bn1")(x)
    # max_pool: nn.max_pool's values, with a gradient XLA CPU computes ~4x faster.
    x = max_pool.max_pool(nn.relu(x), (3, 3), (2, 2), ((1, 1), (1, 1)))
    for stage, (width, count) in enumerate(zip(self.widths, self.stage_sizes)):
      for block in range(count):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(width, stride, self.dtype, name=f"layer{stage + 1}_{block}")(x, train=train)
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    out = {"feature_map": x, "pooled": pooled}
    if self.num_classes is None:
      return pooled, out
    fan_in = pooled.shape[-1]
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                      bias_init=_torch_linear_bias_init(fan_in), name="fc")(pooled)
    out["logits"] = logits
    return logits, out


def resnet18(num_classes: int | None = 1000, **kwargs) -> TorchvisionResNet:
  """torchvision `resnet18` (11,689,512 parameters with the 1000-way fc)."""
  return TorchvisionResNet(stage_sizes=(2, 2, 2, 2), num_classes=num_classes, **kwargs)


def resnet34(num_classes: int | None = 1000, **kwargs) -> TorchvisionResNet:
  """torchvision `resnet34` (21,797,672 parameters with the 1000-way fc)."""
  return TorchvisionResNet(stage_sizes=(3, 4, 6, 3), num_classes=num_classes, **kwargs)
