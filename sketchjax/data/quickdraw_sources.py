"""Record sources of real QuickDraw data for the tasks.

`train_test_sources` builds (once, cached) the TFDS QuickDraw dataset from a
folder of official files, or several (`data.dir` = "a,b": ndjson files merged
without duplicates, categories chosen by `data.min_drawings`; see
quickdraw_folders.py), and opens its splits with `tfds.data_source`;
`folder_source` reads a folder of official files directly for evaluation.
Records are `{"stroke3": int32[L, 3], "label": int}` like every source.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

from absl import logging
import ml_collections

from sketchjax.data import categories as categories_lib
from sketchjax.data import quickdraw_folders, records, tfds_quickdraw
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
  """(train source, test source, class names) of the TFDS QuickDraw build.

  Raises ValueError when the train split is empty (sketch-rnn files holding
  only a test split): training needs drawings; evaluation does not.
  """
  data = config.data
  dirs = quickdraw_folders.parse_dirs(data.dir)
  if not dirs and not data.download:
    raise ValueError(f"data.source='quickdraw' needs data: {HOW_TO_GET_DATA}")
  for directory in dirs:
    if not pathlib.Path(directory).is_dir():
      raise FileNotFoundError(f"data.dir {directory!r} is not a folder: {HOW_TO_GET_DATA}")
  tfds_dir = data.tfds_dir or str(workdir / "tfds")
  min_drawings = data.get("min_drawings", 0)
  if len(dirs) > 1 or min_drawings:
    if data.format != "ndjson" or data.download:
      raise ValueError(f"data.dir={data.dir!r}, data.min_drawings={min_drawings}: several "
                       "folders and a minimum count need local ndjson files "
                       "(data.format='ndjson', data.download=False)")
    merged = quickdraw_folders.merge_folders(
        dirs, None if data.categories == FOLDER_CATEGORIES else
        categories_lib.resolve_categories(data.categories), min_drawings,
        records.BadInputPolicy(on_error=data.on_bad_record))
    for line in merged.summary(data.test_fraction).splitlines():
      logging.info("%s", line)
    manual_dir = quickdraw_folders.write_merged(merged, tfds_dir)
    # The build is keyed by the merged content, so changing the folders rebuilds it.
    tfds_dir, categories = str(manual_dir.parent), merged.categories
  else:
    manual_dir, categories = (dirs[0] if dirs else None), _categories(data)
  builder = tfds_quickdraw.build(
      data_dir=tfds_dir, manual_dir=manual_dir, categories=categories, source=data.format,
      download=data.download, test_fraction=data.test_fraction)
  class_names = tuple(builder.info.features["label"].names)
  train = tfds_quickdraw.load_split(builder, "train")
  if len(train) == 0:
    raise ValueError(
        f"data.dir={data.dir!r} has no training drawings (sketch-rnn files such as "
        "../shared/data/quickdraw/extra/sketchrnn_npz hold only a test split): train on "
        "files with a train split, and evaluate on these with --config.mode=evaluate "
        "--config.data.eval_dir=<folder>")
  return train, tfds_quickdraw.load_split(builder, "test"), class_names


def folder_source(config: ml_collections.ConfigDict,
                  class_names: Sequence[str]) -> tuple[list[dict], list[str]]:
  """(every drawing of `config.data.eval_dir`, labelled by its file name; the
  classes skipped as unknown to the model).

  sketch-rnn `.npz` files contribute their `test` split (the only one some
  hold). Files of classes not in `class_names` are refused, or skipped with
  `config.data.unknown_classes="skip"`.
  """
  eval_dir = config.data.eval_dir
  if not eval_dir:
    raise ValueError("mode=evaluate needs --config.data.eval_dir=<folder of official "
                     "QuickDraw files, one per class, named <class>.ndjson/.npz/.bin>")
  files = folder.list_category_files(eval_dir)
  unknown = sorted(set(files) - set(class_names))
  policy_name = config.data.get("unknown_classes", "refuse")
  if policy_name not in ("refuse", "skip"):
    raise ValueError(f"data.unknown_classes={policy_name!r}: expected 'refuse' or 'skip'")
  if unknown and policy_name == "refuse":
    raise ValueError(f"{eval_dir} has files of classes the model was not trained on: "
                     f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}; "
                     "--config.data.unknown_classes=skip evaluates the known ones")
  if unknown:
    logging.warning("%s: skipped %d classes the model was not trained on: %s", eval_dir,
                    len(unknown), ", ".join(unknown))
    files = {name: path for name, path in files.items() if name not in unknown}
    if not files:
      raise ValueError(f"{eval_dir} has no file of a class the model knows "
                       f"({len(class_names)} classes, e.g. {list(class_names)[:5]})")
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
  return source, unknown
