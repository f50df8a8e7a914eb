"""One photo or sketch image of a retrieval dataset, before it is decoded.

Readers of every image layout (Sketchy, PACS/TU-Berlin, the DF-SBIR
ImageFolder tree, SAKE file lists, QuickDraw bitmaps and vector drawings)
return lists of `ImageItem`; splits and pipelines work on these lists, and
decoding to pixels happens only in the pipeline.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Modality = Literal["photo", "sketch"]
MODALITIES: tuple[Modality, ...] = ("photo", "sketch")


@dataclasses.dataclass(frozen=True, order=True)
class ImageItem:
  """Where one image is and what it shows.

  Attributes:
    path: the image file; for QuickDraw, `<file.npy>#<row>` (0-based bitmap
      row) or `<file.ndjson>#<line>` (1-based line of a vector drawing).
    label: the class name, e.g. "airplane".
    modality: "photo" or "sketch".
    instance: the photo id the image shows ("n02691156_10151" for that photo
      and its sketches `n02691156_10151-<k>.png`); "" where unknown.
  """

  path: str
  label: str
  modality: Modality
  instance: str = ""
