"""A TFDS builder of the retrieval splits, written as array_record, without TensorFlow.

`SbirImages` stores one `sbir_splits` split (one builder config per split
name) as four TFDS splits, one per side and modality: "train_photo",
"train_sketch", "test_photo", "test_sketch" (their counts are in
`info.splits`). Features of each record:

  image      bytes   the file's own bytes (Sketchy/PACS PNG or JPEG), or a
                     PNG of `load_image`'s render for a QuickDraw drawing
  label      int64   index of the class in the side's class list
                     (`info.metadata["classes"]["train" | "test"]`)
  class_name text    e.g. "alarm_clock"
  modality   text    "photo" or "sketch"
  instance   text    the photo id ("" where unknown)
  file_name  text    the path relative to the data folder, e.g.
                     "sketchy/photo/airplane/n02691156_10151.jpg" or
                     "quickdraw/simplified/cat.ndjson#3"

Records keep the split's order (by class, then path): shuffling is off, so
record i of "test_photo" is `split.test.photos[i]` and `image_pipeline` gives
the same batches from the TFDS split as from the items in memory.

The data folder (`manual_dir`) has the layout of `../shared/data`:
`sketchy/`, `tuberlin_pacs/`, `quickdraw/{simplified,extra/simplified}/`
(`sbir_splits.DataDirs.under`). Preparing and reading never import
TensorFlow (as `tfds_quickdraw`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from sketchjax.data import sbir_splits
from sketchjax.data.formats.image_folders import load_image
from sketchjax.data.image_items import MODALITIES, ImageItem

SPLITS: tuple[str, ...] = ("train_photo", "train_sketch", "test_photo", "test_sketch")


@dataclasses.dataclass(kw_only=True, eq=False)
class SbirConfig(tfds.core.BuilderConfig):
  """Which split to store; make it with `sbir_config`.

  Attributes:
    split: a name of `sbir_splits.SPLIT_NAMES`.
    test_fraction, max_drawings_per_class: as `sbir_splits.make_split`.
  """

  split: str = "category"
  test_fraction: float = 0.2
  max_drawings_per_class: int | None = 100


def _new_config(split: str, test_fraction: float,
                max_drawings_per_class: int | None) -> SbirConfig:
  if split not in sbir_splits.SPLIT_NAMES:
    raise ValueError(f"unknown split {split!r}; splits: {', '.join(sbir_splits.SPLIT_NAMES)}")
  name = split
  if split in ("category", "quickdraw_photo") and test_fraction != 0.2:
    name += f"-test{test_fraction:g}"
  if split == "quickdraw_photo" and max_drawings_per_class != 100:
    name += f"-max{max_drawings_per_class}"
  return SbirConfig(name=name, split=split, test_fraction=test_fraction,
                    max_drawings_per_class=max_drawings_per_class,
                    description=f"the {split} retrieval split (sketchjax.data.sbir_splits)")


def sbir_config(split: str, test_fraction: float = 0.2,
                max_drawings_per_class: int | None = 100) -> SbirConfig:
  """The config of a split (the predefined one for the default settings)."""
  config = _new_config(split, test_fraction, max_drawings_per_class)
  return SbirImages.builder_configs.get(config.name, config)


class SbirImages(tfds.core.GeneratorBasedBuilder):
  """Photos and sketches of one retrieval split, as encoded images with labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [_new_config(name, 0.2, 100) for name in sbir_splits.SPLIT_NAMES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  The manual folder holds the datasets in the layout of the project's
  ../shared/data: sketchy/{photo,sketch}/<class>/, tuberlin_pacs/{photo,sketch}/<class>/
  and quickdraw/simplified/ + quickdraw/extra/simplified/ (<category>.ndjson).
  Each split reads only the folders it needs.
  """
  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Photos and sketches of a sketch-based image retrieval split.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            "label": tfds.features.Scalar(dtype=np.int64),
            "class_name": tfds.features.Text(),
            "modality": tfds.features.Text(),
            "instance": tfds.features.Text(),
            "file_name": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # records in the split's order, keyed by position
        homepage="https://sketchy.eye.gatech.edu/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    config = self.builder_config
    split = sbir_splits.make_split(config.split, sbir_splits.DataDirs.under(root),
                                   test_fraction=config.test_fraction,
                                   max_drawings_per_class=config.max_drawings_per_class)
    self.info.metadata["classes"] = {"train": list(split.train.classes),
                                     "test": list(split.test.classes)}
    self.info.metadata["pairing"] = split.pairing
    self.info.metadata["relevance"] = split.relevance
    return {f"{side}_{modality}": self._generate_examples(getattr(split, side), modality, root)
            for side in ("train", "test") for modality in MODALITIES}

  def _generate_examples(self, side: sbir_splits.SplitSide, modality: str,
                         root: pathlib.Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for index, item in enumerate(side.items(modality)):
      name = _relative_name(item, root)
      yield index, {"image": _encoded(item), "label": side.label_index(item),
                   "class_name": item.label, "modality": item.modality,
                   "instance": item.instance, "file_name": name}


def _relative_name(item: ImageItem, root: pathlib.Path) -> str:
  try:
    return pathlib.Path(item.path).relative_to(root).as_posix()
  except ValueError:  # outside the manual folder (a symlinked tree keeps its own paths)
    return item.path


def _encoded(item: ImageItem) -> bytes:
  """The image file's bytes, or a PNG of a QuickDraw row's or drawing's render."""
  _, hash_, index = item.path.rpartition("#")
  if not (hash_ and index.isdigit()):
    return pathlib.Path(item.path).read_bytes()
  out = io.BytesIO()
  Image.fromarray(load_image(item)).save(out, format="PNG")
  return out.getvalue()


def build(data_dir: str | os.PathLike, manual_dir: str | os.PathLike, split: str, *,
          test_fraction: float = 0.2, max_drawings_per_class: int | None = 100) -> SbirImages:
  """Prepares (or reuses) a split under `data_dir` and returns its builder.

  Args:
    data_dir: TFDS data folder; the dataset goes to
      `<data_dir>/sbir_images/<config name>/1.0.0`.
    manual_dir: the data folder (layout of `../shared/data`).
    split: a name of `sbir_splits.SPLIT_NAMES`.
  """
  builder = SbirImages(config=sbir_config(split, test_fraction, max_drawings_per_class),
                       data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def load_split(builder_or_dir: tfds.core.DatasetBuilder | str | os.PathLike,
               split: str) -> Sequence[dict[str, Any]]:
  """Random-access records of "train_photo", "train_sketch", "test_photo" or
  "test_sketch" (or a TFDS slice of one), each a dict of numpy values."""
  if isinstance(builder_or_dir, tfds.core.DatasetBuilder):
    builder = builder_or_dir
  else:
    builder = tfds.builder_from_directory(builder_or_dir)
  return builder.as_data_source(split)
