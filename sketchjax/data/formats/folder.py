"""A folder of per-category QuickDraw files, `<category>.<ndjson|npz|bin>`.

The category is the file stem (`alarm clock.ndjson` -> "alarm clock");
categories sort case-insensitively, as in the official SketchXAI code, and a
category's class id is its index in that order.
"""

from __future__ import annotations

import os
import pathlib

from sketchjax.data.formats.binary import read_binary
from sketchjax.data.formats.ndjson import read_ndjson
from sketchjax.data.formats.sketchrnn_npz import read_sketchrnn_split
from sketchjax.data.records import BadInputPolicy, Drawing, SketchFormatError

CATEGORY_SUFFIXES = (".ndjson", ".npz", ".bin")


def list_category_files(folder: str | os.PathLike) -> dict[str, pathlib.Path]:
  """`{category: file}` for the category files of `folder`, sorted
  case-insensitively; files of other formats are ignored."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(
        f"no sketch folder at {folder}: point it at a folder of per-category "
        f"files ({', '.join(CATEGORY_SUFFIXES)}), e.g. the official QuickDraw "
        "full/simplified or sketchrnn files")
  files = {}
  for path in folder.iterdir():
    if path.suffix not in CATEGORY_SUFFIXES or not path.is_file():
      continue
    if path.stem in files:
      raise ValueError(f"category {path.stem!r} has two files in {folder}: "
                       f"{files[path.stem].name} and {path.name}; keep one format")
    files[path.stem] = path
  if not files:
    raise ValueError(f"no category files ({', '.join(CATEGORY_SUFFIXES)}) in {folder}")
  return {name: files[name] for name in sorted(files, key=str.lower)}


def read_drawings(path: str | os.PathLike, *, split: str = "train",
                  policy: BadInputPolicy | None = None) -> list[Drawing]:
  """All drawings of one category file, whose word is the file stem.

  `.npz` files give the drawings of `split`, with `key_id` the index in it.
  """
  path = pathlib.Path(path)
  if path.suffix == ".ndjson":
    return list(read_ndjson(path, policy=policy))
  if path.suffix == ".bin":
    return list(read_binary(path, word=path.stem, policy=policy))
  if path.suffix == ".npz":
    return [Drawing(sketch, word=path.stem, key_id=i)
            for i, sketch in read_sketchrnn_split(path, split, policy=policy)]
  raise SketchFormatError(path, None, f"unknown format {path.suffix!r}; expected one of "
                          f"{', '.join(CATEGORY_SUFFIXES)}")
