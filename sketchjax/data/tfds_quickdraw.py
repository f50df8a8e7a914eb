"""A TFDS builder of QuickDraw strokes, written as array_record, without TensorFlow.

`QuickdrawStrokes` turns official QuickDraw files into a TFDS dataset of
exact stroke-3 drawings, read back by random access with `tfds.data_source` /
`builder.as_data_source` (then grain). Features of each record:

  stroke3  int32[num_points, 3]  rows (dx, dy, pen_lifted); the first row is
                                 the absolute first point (see
                                 `sketchjax.sketch.sketch.to_stroke3`)
  label    int64                 index of the category in
                                 `config.categories` (official class-id order)
  key_id   int64                 the official key_id (ndjson) or the index of
                                 the drawing within its split (sketch-rnn npz)
  word     bytes                 the category name, UTF-8

Sources (`QuickdrawConfig.source`):

  "ndjson"         official `full/simplified/<category>.ndjson`; splits
                   "train"/"test" by key_id (`sketchjax.data.splits`).
  "sketchrnn_npz"  official `sketchrnn/<category>.npz`; splits
                   "train"/"validation"/"test" = the file's train/valid/test.
                   A split empty in every file (the test-only files of
                   ../shared/data/quickdraw/extra/sketchrnn_npz) is not
                   written; `load_split` gives it as an empty sequence.

Files come from the TFDS manual folder (`manual_dir`, by default
`<data_dir>/downloads/manual`), one per category named `<category>.ndjson` or
`<category>.npz` (official names, with spaces). Only when the builder is made
with `download=True` are missing ones fetched from the official bucket (or
`base_url`); otherwise a missing file is an error that says how to get it.

No TensorFlow: TFDS 4.9.10 writes array_record with its own pure-protobuf copy
of `tf.train.Example`, and its array_record data source parses records with
numpy (`ExampleParserNp`), so preparing and reading never import `tensorflow`
(the tests check `sys.modules`). No workaround is needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import os
from collections.abc import Iterator, Sequence
from typing import Literal
from urllib.parse import quote

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from sketchjax.data.categories import (QUICKDRAW_345, SKETCHXAI_30, resolve_categories,
                                       sort_categories)
from sketchjax.data.formats.ndjson import read_ndjson
from sketchjax.data.formats.sketchrnn_npz import read_sketchrnn_split
from sketchjax.data.splits import split_by_key_id
from sketchjax.sketch.sketch import Sketch, to_stroke3

Source = Literal["ndjson", "sketchrnn_npz"]

# Official locations; a file is `<base><url-quoted category><suffix>`.
NDJSON_BASE_URL = "https://storage.googleapis.com/quickdraw_dataset/full/simplified/"
SKETCHRNN_NPZ_BASE_URL = "https://storage.googleapis.com/quickdraw_dataset/sketchrnn/"

# TFDS split name -> the key of that split inside a sketch-rnn .npz file.
_NPZ_SPLIT_KEYS = {"train": "train", "validation": "valid", "test": "test"}


@dataclasses.dataclass(kw_only=True, eq=False)
class QuickdrawConfig(tfds.core.BuilderConfig):
  """What a `QuickdrawStrokes` dataset holds; make it with `quickdraw_config`.

  Attributes:
    categories: official names, in class-id order (the label is the index).
    source: "ndjson" or "sketchrnn_npz".
    max_per_category: at most this many drawings a category (ndjson: the
      lowest key_ids, before the split; npz: the first of each split).
    test_fraction: share of each category that is test (ndjson only).
  """

  categories: tuple[str, ...] = ()
  source: Source = "ndjson"
  max_per_category: int | None = None
  test_fraction: float = 0.25


def _new_config(categories: tuple[str, ...], source: Source,
                max_per_category: int | None, test_fraction: float) -> QuickdrawConfig:
  if source not in ("ndjson", "sketchrnn_npz"):
    raise ValueError(f"source must be 'ndjson' or 'sketchrnn_npz', got {source!r}")
  if max_per_category is not None and max_per_category < 1:
    raise ValueError(f"max_per_category must be None or >= 1, got {max_per_category}")
  if not 0.0 <= test_fraction <= 1.0:
    raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
  categories = sort_categories(resolve_categories(categories))
  if categories == QUICKDRAW_345:
    name = "qd345"
  elif categories == SKETCHXAI_30:
    name = "sketchxai30"
  else:  # a short stable name for an arbitrary list
    digest = hashlib.sha1("\n".join(categories).encode()).hexdigest()[:10]
    name = f"{len(categories)}cats-{digest}"
  name += f"-{source}"
  if max_per_category is not None:
    name += f"-max{max_per_category}"
  if source == "ndjson":
    name += f"-test{test_fraction:g}"
  return QuickdrawConfig(
      name=name, categories=categories, source=source,
      max_per_category=max_per_category, test_fraction=test_fraction,
      description=f"{len(categories)} QuickDraw categories from {source} files")


def quickdraw_config(categories: str | Sequence[str], source: Source = "ndjson",
                     max_per_category: int | None = None,
                     test_fraction: float = 0.25) -> QuickdrawConfig:
  """The config for these settings (a predefined one where it exists).

  Args:
    categories: as accepted by `categories.resolve_categories` ("all",
      "sketchxai30", "cat,dog", or a list); sorted into class-id order.
  """
  config = _new_config(categories, source, max_per_category, test_fraction)
  return QuickdrawStrokes.builder_configs.get(config.name, config)


def category_url(category: str, source: Source, base_url: str | None = None) -> str:
  """Where the official file of `category` is (spaces become %20)."""
  return _folder_url(source, base_url) + quote(category) + _suffix(source)


def _folder_url(source: Source, base_url: str | None) -> str:
  if base_url is None:
    base_url = NDJSON_BASE_URL if source == "ndjson" else SKETCHRNN_NPZ_BASE_URL
  return base_url.rstrip("/") + "/"


def _suffix(source: Source) -> str:
  return ".ndjson" if source == "ndjson" else ".npz"


class QuickdrawStrokes(tfds.core.GeneratorBasedBuilder):
  """QuickDraw drawings as exact stroke-3, with labels and key_ids."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      _new_config(categories, source, None, 0.25)
      for categories in (QUICKDRAW_345, SKETCHXAI_30)
      for source in ("ndjson", "sketchrnn_npz")
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put one official file per category in the manual folder, named with the
  official category name (spaces kept): `<category>.ndjson` for the ndjson
  source (from {NDJSON_BASE_URL}<category>.ndjson) or `<category>.npz` for the
  sketch-rnn source (from {SKETCHRNN_NPZ_BASE_URL}<category>.npz). Or build
  with `download=True` on a machine with internet access.
  """

  def __init__(self, *, download: bool = False, base_url: str | None = None, **kwargs):
    """Args: as `tfds.core.GeneratorBasedBuilder`, and

      download: fetch files missing from the manual folder from `base_url`.
      base_url: folder URL of the files (default: the official one of the
        config's source).
    """
    self._download = download
    self._base_url = base_url
    super().__init__(**kwargs)
    self._original_state.update(download=download, base_url=base_url)  # pickling

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Google QuickDraw drawings as exact stroke-3 (dx, dy, pen_lifted).",
        features=tfds.features.FeaturesDict({
            "stroke3": tfds.features.Tensor(shape=(None, 3), dtype=np.int32),
            "label": tfds.features.ClassLabel(names=self.builder_config.categories),
            "key_id": tfds.features.Scalar(dtype=np.int64),
            "word": tfds.features.Text(),
        }),
        supervised_keys=("stroke3", "label"),
        homepage="https://github.com/googlecreativelab/quickdraw-dataset",
        citation="""@article{ha2017neural,
  title={A Neural Representation of Sketch Drawings},
  author={Ha, David and Eck, Douglas},
  journal={arXiv preprint arXiv:1704.03477},
  year={2017}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    files = self._source_files(dl_manager)
    if self.builder_config.source == "ndjson":
      splits = ("train", "test")
    else:  # TFDS cannot write an empty split.
      splits = [split for split, key in _NPZ_SPLIT_KEYS.items()
                if any(_npz_split_size(path, key) for path in files.values())]
      if not splits:
        raise ValueError(f"the sketch-rnn files {sorted(map(str, files.values()))[:3]} "
                         "hold no drawings in any split")
    return {split: self._generate_examples(files, split) for split in splits}

  def _source_files(self, dl_manager: tfds.download.DownloadManager) -> dict[str, epath.Path]:
    """{category: local file}: the manual folder's, else downloaded if allowed."""
    config = self.builder_config
    suffix = _suffix(config.source)
    manual = _manual_folder(dl_manager)
    files = {c: manual / f"{c}{suffix}" for c in config.categories} if manual else {}
    files = {c: path for c, path in files.items() if path.exists()}
    missing = [c for c in config.categories if c not in files]
    if missing and not self._download:
      folder = manual or f"{dl_manager.download_dir / 'manual'} (or the manual_dir you pass)"
      names = ", ".join(repr(f"{c}{suffix}") for c in missing[:5])
      more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
      raise FileNotFoundError(
          f"QuickDraw {config.source} files are missing for {len(missing)} of "
          f"{len(config.categories)} categories: {names}{more}. Put the official "
          f"files, one per category named '<category>{suffix}' (official name, "
          f"spaces kept), in {folder}; they are at "
          f"{_folder_url(config.source, self._base_url)}<category>{suffix} (spaces as "
          f"%20), e.g. {category_url(missing[0], config.source, self._base_url)}. "
          "Or build with download=True on a machine with internet access.")
    if missing:
      urls = {c: category_url(c, config.source, self._base_url) for c in missing}
      files.update(dl_manager.download(urls))
    return files

  def _generate_examples(self, files: dict[str, epath.Path], split: str) -> Iterator:
    if self.builder_config.source == "ndjson":
      return self._ndjson_examples(files, split)
    return self._npz_examples(files, split)

  def _ndjson_examples(self, files: dict[str, epath.Path], split: str) -> Iterator:
    config = self.builder_config
    for category, path in files.items():
      drawings = read_ndjson(path)
      if config.max_per_category is not None:
        drawings = heapq.nsmallest(config.max_per_category, drawings, key=lambda d: d.key_id)
      train, test = split_by_key_id(list(drawings), config.test_fraction)
      for drawing in train if split == "train" else test:
        if drawing.word != category:
          raise ValueError(f"{path}: drawing key_id {drawing.key_id} has word "
                           f"{drawing.word!r}, expected {category!r}")
        where = f"{path} key_id {drawing.key_id}"
        yield (f"{category}/{drawing.key_id}",
               _example(drawing.sketch, category, drawing.key_id, where))

  def _npz_examples(self, files: dict[str, epath.Path], split: str) -> Iterator:
    config = self.builder_config
    for category, path in files.items():
      for index, sketch in read_sketchrnn_split(path, _NPZ_SPLIT_KEYS[split]):
        if config.max_per_category is not None and index >= config.max_per_category:
          break
        yield (f"{category}/{index}",
               _example(sketch, category, index, f"{path} {_NPZ_SPLIT_KEYS[split]}[{index}]"))


def _npz_split_size(path: epath.Path, key: str) -> int:
  with np.load(path, allow_pickle=True, encoding="latin1") as npz:
    return len(npz[key]) if key in npz.files else 0


def _manual_folder(dl_manager: tfds.download.DownloadManager) -> epath.Path | None:
  try:
    return dl_manager.manual_dir
  except AssertionError:  # how TFDS says the manual folder is absent or empty
    return None


def _example(sketch: Sketch, category: str, key_id: int, where: str) -> dict:
  rows = to_stroke3(sketch)
  stroke3 = rows.astype(np.int32)
  if not np.array_equal(stroke3, rows):
    raise ValueError(f"{where}: coordinates are not integers; the dataset stores "
                     "exact int32 stroke-3 (use the simplified files)")
  return {"stroke3": stroke3, "label": category, "key_id": key_id, "word": category}


def build(data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None,
          categories: str | Sequence[str], source: Source = "ndjson", *,
          download: bool = False, base_url: str | None = None,
          max_per_category: int | None = None, test_fraction: float = 0.25
          ) -> QuickdrawStrokes:
  """Prepares (or reuses) the dataset under `data_dir` and returns its builder.

  Args:
    data_dir: TFDS data folder; the dataset goes to
      `<data_dir>/quickdraw_strokes/<config name>/1.0.0`.
    manual_dir: folder of official `<category>.ndjson` / `.npz` files, or None
      for `<data_dir>/downloads/manual`.
    categories: see `quickdraw_config`.
    download: fetch files missing from `manual_dir` (never done otherwise).
    base_url: where to fetch them from (default: the official bucket).
  """
  config = quickdraw_config(categories, source, max_per_category, test_fraction)
  builder = QuickdrawStrokes(config=config, data_dir=data_dir, file_format="array_record",
                             download=download, base_url=base_url)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def load_split(builder_or_dir: tfds.core.DatasetBuilder | str | os.PathLike,
               split: str) -> Sequence[dict[str, np.ndarray]]:
  """Random-access records of a split (`len`, `[i]`), each a dict of numpy values.

  Args:
    builder_or_dir: a prepared builder, or the folder of a prepared dataset
      (`.../quickdraw_strokes/<config name>/1.0.0`).
    split: "train", "test", "validation", or a TFDS slice such as "train[:10]".
  """
  if isinstance(builder_or_dir, tfds.core.DatasetBuilder):
    builder = builder_or_dir
  else:
    builder = tfds.builder_from_directory(builder_or_dir)
  if split in _NPZ_SPLIT_KEYS and split not in builder.info.splits:
    return []  # Empty in every sketch-rnn file, so not written.
  return builder.as_data_source(split)
