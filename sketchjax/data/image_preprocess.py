"""The official preprocessing of each retrieval code, as named settings.

uint8 [H, W, 3] RGB in, float32 [S, S, 3] out, S = `image_size` (224 in the
official codes; smaller for CPU runs). Pure numpy and PIL:

- "zse" (ZSE-SBIR `data_utils/utils.py::preprocess`):
  sketch: crop to the bounding box of the pixels with R + G + B <= 300 plus
  a margin (`[min - 10, max + 10)`, the official slice, so 10 pixels before
  the ink and 9 after, clipped to the image), resize keeping the aspect ratio
  so the long side is S (cv2's bilinear, bit for bit; short side truncated),
  pad the short side symmetrically with the image's maximum (white; the extra
  pixel of an odd gap goes after); photo: PIL bicubic resize to S x S (Pillow's
  default `resize`). Both then (x / 255 - 0.5) / 0.5, in [-1, 1].
- "dfsbir" (CrossX-DFL `utils/dataloaders.py`): torchvision `Resize((S, S))`
  on PIL (bilinear, antialiased), x / 255, then mean (0.4914, 0.4822, 0.4465)
  and std (0.2023, 0.1994, 0.2010): CIFAR-10's statistics, although the
  official code calls them ImageNet's. Same for both modalities.
- "mobilenet" (the TFLite MobileNetV2 classifiers): bilinear resize to S x S,
  x / 127.5 - 1, in [-1, 1]. Same for both modalities.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from sketchjax.data.image_items import MODALITIES

SETTINGS = ("zse", "dfsbir", "mobilenet")
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR_STD = np.array([0.2023, 0.1994, 0.2010], np.float32)
ZSE_INK_THRESHOLD = 300  # a pixel is ink when R + G + B <= this
ZSE_MARGIN = 10  # pixels kept around the ink
_CV2_WEIGHT_SCALE = 2048  # cv2 INTER_RESIZE_COEF_SCALE: 11-bit interpolation weights


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """One official preprocessing: `pre(image_u8, modality) -> float32 [S, S, 3]`.

  Attributes:
    setting: one of `SETTINGS`.
    image_size: S, the side of the output in pixels.
  """

  setting: str = "zse"
  image_size: int = 224

  def __post_init__(self):
    if self.setting not in SETTINGS:
      raise ValueError(f"unknown preprocessing {self.setting!r}; valid settings: "
                       f"{', '.join(SETTINGS)}")
    if self.image_size < 1:
      raise ValueError(f"image_size must be >= 1, got {self.image_size}")

  def __call__(self, image: np.ndarray, modality: str) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [S, S, 3]."""
    if modality not in MODALITIES:
      raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3 or not image.size:
      raise ValueError(f"expected a uint8 [H, W, 3] RGB image, got {image.dtype} "
                       f"{list(image.shape)}")
    size = self.image_size
    if self.setting == "zse":
      if modality == "sketch":
        resized = zse_square_sketch(image, size)
      else:
        resized = resize_pil(image, size, Image.Resampling.BICUBIC)
      return (resized.astype(np.float32) / 255 - 0.5) / 0.5
    resized = resize_pil(image, size, Image.Resampling.BILINEAR).astype(np.float32)
    if self.setting == "dfsbir":
      return (resized / 255 - CIFAR_MEAN) / CIFAR_STD
    return resized / 127.5 - 1


def zse_square_sketch(image: np.ndarray, size: int) -> np.ndarray:
  """ZSE-SBIR's sketch crop, aspect-kept resize and white padding:
  uint8 [H, W, 3] -> uint8 [size, size, 3].

  An image without ink (no pixel at or under the threshold, where the
  official code fails) is kept whole.
  """
  height, width = image.shape[:2]
  rows, cols = np.nonzero(image.astype(np.int32).sum(-1) <= ZSE_INK_THRESHOLD)
  if rows.size:
    image = image[max(0, rows.min() - ZSE_MARGIN):min(height, rows.max() + ZSE_MARGIN),
                  max(0, cols.min() - ZSE_MARGIN):min(width, cols.max() + ZSE_MARGIN)]
  height, width = image.shape[:2]
  ratio = height / width
  if height > width:
    image = resize_linear_cv2(image, size, max(1, int(size / ratio)))
  else:
    image = resize_linear_cv2(image, max(1, int(size * ratio)), size)
  height, width = image.shape[:2]
  before = (size - min(height, width)) // 2
  after = size - min(height, width) - before
  pad = ((0, 0), (before, after)) if height > width else ((before, after), (0, 0))
  return np.pad(image, pad + ((0, 0),), constant_values=image.max())


def resize_linear_cv2(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """cv2.resize(INTER_LINEAR) of a uint8 image, bit for bit, in numpy:
  uint8 [H, W, C] -> uint8 [height, width, C].

  Pixel centres aligned, no antialiasing when shrinking; cv2's fixed point:
  11-bit weights (float32 positions), a horizontal pass in integers, then
  the vertical pass as its SIMD code rounds it. Column weights are clamped at
  the ends; row weights are not (only the rows are), as in cv2. Matches
  opencv-python-headless 5.1 on random images of many shapes.
  """
  rows, row_weights = _fixed_point_taps(image.shape[0], height, clamp_weights=False)
  cols, col_weights = _fixed_point_taps(image.shape[1], width, clamp_weights=True)
  x = image.astype(np.int64)
  x = x[:, cols[0]] * col_weights[0][:, None] + x[:, cols[1]] * col_weights[1][:, None]
  top = (row_weights[0][:, None, None] * (x[rows[0]] >> 4)) >> 16
  bottom = (row_weights[1][:, None, None] * (x[rows[1]] >> 4)) >> 16
  return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


def _fixed_point_taps(source: int, target: int, *, clamp_weights: bool):
  """cv2's linear taps: ((first, second) source indices, (w0, w1) weights x 2048)."""
  position = ((np.arange(target) + 0.5) * (source / target) - 0.5).astype(np.float32)
  first = np.floor(position).astype(np.int64)
  weight = position - first.astype(np.float32)
  if clamp_weights:
    weight[(first < 0) | (first >= source - 1)] = 0
  scale = np.float32(_CV2_WEIGHT_SCALE)
  weights = (np.rint((1 - weight) * scale).astype(np.int64), np.rint(weight * scale).astype(np.int64))
  return (np.clip(first, 0, source - 1), np.clip(first + 1, 0, source - 1)), weights


def resize_pil(image: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
  """PIL resize to size x size: uint8 [H, W, 3] -> uint8 [size, size, 3]."""
  return np.asarray(Image.fromarray(image).resize((size, size), resample))
