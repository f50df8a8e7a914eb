"""Raster sketch classifier: hard-rasterise the stroke batch, then a ResNet-18 (GroupNorm)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax

from sketchjax.data.rasterize import rasterize
from sketchjax.models.resnet import ResNet18


class RasterClassifier(nn.Module):
  """Stroke batch -> image_size^2 ink image (1 = ink) -> ResNet18 logits.

  Takes the same batch dict as SketchXAINet, so the two are interchangeable
  in training and attribution code.

  Attributes:
    num_classes: output classes.
    image_size: raster side in pixels.
    widths, blocks, norm_groups: the ResNet18's.
    line_width: stroke width in pixels.
  """

  num_classes: int
  image_size: int = 64
  widths: Sequence[int] = (64, 128, 256, 512)
  blocks: Sequence[int] = (2, 2, 2, 2)
  norm_groups: int = 32
  line_width: int = 2

  @nn.compact
  def __call__(self, batch: Mapping[str, jax.Array], *,
               train: bool) -> tuple[jax.Array, dict[str, Any]]:
    """Batch dict (points, stroke_len, loc) -> (logits [B, C], {"image", "features", "logits"}).

    `train` is accepted for a uniform interface; the model has no dropout or
    batch statistics.
    """
    del train
    image = rasterize(batch["points"], batch["stroke_len"], batch["loc"], size=self.image_size,
                      line_width=self.line_width)
    logits, out = ResNet18(self.num_classes, self.widths, self.blocks, self.norm_groups,
                           name="resnet")(image[..., None])
    return logits, {"image": image, **out}
