"""Record sources of real QuickDraw data for the tasks.

`train_test_sources` builds (once, cached) the TFDS QuickDraw dataset from a
folder of official files and opens its splits with `tfds.data_source`;
`folder_source` reads a folder of official files directly for evaluation.
Records are `{"stroke3": int32[L, 3], "label": int}` like every source.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

from absl import logging
import ml_collections

from sketchjax.data import categories as categories_lib
from sketchjax.data import records, tfds_quickdraw
from sketchjax.data.formats import folder
from sketchjax.sketch.sketch import to_stroke3

FOLDER_CATEGORIES = "folder"  # every category file found in data.dir

HOW_TO_GET_DATA = (
    "give a folder of official QuickDraw files (<category>.ndjson from "
    "full/simplified, or sketch-rnn <category>.npz) with --config.data.dir=<folder>, "
    "e.g. ../shared/data/quickdraw/simplified, or add --config.data.download=True "
    "on a machine with internet to fetch them from the official location")


def _categories(data: ml_collections.ConfigDict) -> tuple[str, ...]:
  if data.categories == FOLDER_CATEGORIES:
    return tuple(folder.list_category_files(data.dir))
  return tuple(categories_lib.resolve_categories(data.categories))


def train_test_sources(config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """(train source, test source, class names) of the TFDS QuickDraw build."""
  data = config.data
  if not data.dir and not data.download:
    raise ValueError(f"data.source='quickdraw' needs data: {HOW_TO_GET_DATA}")
  if data.dir and not pathlib.Path(data.dir).is_dir():
    raise FileNotFoundError(f"data.dir {data.dir!r} is not a folder: {HOW_TO_GET_DATA}")
  builder = tfds_quickdraw.build(
      data_dir=data.tfds_dir or str(workdir / "tfds"), manual_dir=data.dir or None,
      categories=_categories(data), source=data.format, download=data.download,
      test_fraction=data.test_fraction)
  class_names = tuple(builder.info.features["label"].names)
  return (tfds_quickdraw.load_split(builder, "train"),
          tfds_quickdraw.load_split(builder, "test"), class_names)


def folder_source(config: ml_collections.ConfigDict,
                  class_names: Sequence[str]) -> list[dict]:
  """Every drawing of `config.data.eval_dir`, labelled by its file name.

  sketch-rnn `.npz` files contribute their `test` split.
  """
  eval_dir = config.data.eval_dir
  if not eval_dir:
    raise ValueError("mode=evaluate needs --config.data.eval_dir=<folder of official "
                     "QuickDraw files, one per class, named <class>.ndjson/.npz/.bin>")
  files = folder.list_category_files(eval_dir)
  unknown = sorted(set(files) - set(class_names))
  if unknown:
    raise ValueError(f"{eval_dir} has files of classes the model was not trained on: "
                     f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
  policy = records.BadInputPolicy(on_error=config.data.on_bad_record)
  source = []
  for name, path in files.items():
    label = list(class_names).index(name)
    for drawing in folder.read_drawings(path, split="test", policy=policy):
      source.append({"stroke3": to_stroke3(drawing.sketch).astype("int32"),
                     "label": label})
  if policy.counts:
    logging.warning("%s: %s", eval_dir, policy.summary())
  if not source:
    raise ValueError(f"{eval_dir} holds no drawings")
  return source
