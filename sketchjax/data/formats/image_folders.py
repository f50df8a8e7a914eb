"""Readers of the retrieval image layouts, and `load_image` that decodes any item.

Layouts (each reader returns `ImageItem`s; decoding waits for `load_image`):

- Sketchy: `root/sketch/<class>/<photo_id>-<k>.png` drawn from
  `root/photo/<class>/<photo_id>.jpg`; instance = photo_id for both.
- class folders (PACS / TU-Berlin): `root/{photo,sketch}/<class>/...`.
- DF-SBIR's torchvision ImageFolder tree: `root/{train,test}/{photo,sketch}/<class>/...`.
- SAKE / ZSE-SBIR file lists: lines `relative/path label_int`, labels named by
  a class list (`cname_cid.txt`, `cname_cid_zero.txt`) of lines `name id`.
- QuickDraw bitmaps `<category>.npy` (uint8 [N, 784]), items `<file>#<row>`.
- QuickDraw simplified ndjson drawings, items `<file>#<line>` (1-based).

Class folders are read recursively (as torchvision's ImageFolder), keeping
files whose suffix is in `IMAGE_SUFFIXES` (any case) and skipping hidden
ones. Folder readers return items sorted by path (so by class, then file name);
file lists keep their line order; QuickDraw readers go by category
(case-insensitive order, the project's class-id order) then row or line.

Bad input raises `ImageFormatError` naming the file (and line), or, under a
"skip" `BadInputPolicy`, is counted by kind and passed over. Readers list
files without decoding them; `verify_images` decodes every file once, for a
run that must not meet an unreadable image halfway.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Iterator, NamedTuple, Sequence

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageDraw

from sketchjax.data import soft_rasterize
from sketchjax.data.categories import sort_categories
from sketchjax.data.formats.ndjson import _parse_line
from sketchjax.data.image_items import MODALITIES, ImageItem
from sketchjax.data.records import BadInputPolicy, SketchFormatError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_BITMAP_SIDE = 28
_QUICKDRAW_MAX = 255.0  # simplified QuickDraw coordinates are 0..255


class ImageFormatError(SketchFormatError):
  """A bad image, folder or list: `<path>[:<line>]: <kind>: <detail>`.

  `record` is the 1-based line of a list file, the row of a bitmap file, or
  None for a whole file or folder.
  """


class PhotosAndSketches(NamedTuple):
  """The two modalities of one dataset (or split), each sorted by path."""

  photos: list[ImageItem]
  sketches: list[ImageItem]


def read_sketchy(root: str | os.PathLike, *, require_photo: bool = False,
                 policy: BadInputPolicy | None = None) -> PhotosAndSketches:
  """Sketchy's `root/{photo,sketch}/<class>/` with instance pairs.

  A sketch `<photo_id>-<k>.png` has instance `photo_id`, as has its photo
  `<photo_id>.jpg`. A sketch whose photo is missing is, with
  `require_photo=True` (fine-grained use), an error ("missing photo", dropped
  under a skip policy); otherwise it is kept and the count logged. A sketch
  name without `-<k>` is a "bad sketch name" error.
  """
  policy = policy or BadInputPolicy()
  root = pathlib.Path(root)
  photos = _read_tree(root / "photo", "photo", policy, _layout_help("Sketchy", root))
  photos = [dataclasses.replace(p, instance=pathlib.Path(p.path).stem) for p in photos]
  have_photo = {(p.label, p.instance) for p in photos}
  sketches, unpaired = [], []
  for item in _read_tree(root / "sketch", "sketch", policy, _layout_help("Sketchy", root)):
    photo_id, dash, k = pathlib.Path(item.path).stem.rpartition("-")
    if not (photo_id and dash and k.isdigit()):
      policy.handle(ImageFormatError(item.path, None, "bad sketch name: expected "
                                     "<photo_id>-<k> (e.g. n02691156_10151-3.png)"))
      continue
    item = dataclasses.replace(item, instance=photo_id)
    if (item.label, photo_id) not in have_photo:
      if require_photo:
        policy.handle(ImageFormatError(item.path, None, "missing photo: no "
                                       f"{root / 'photo' / item.label / photo_id}.* for this "
                                       "sketch (fine-grained pairs need every sketch's photo)"))
        continue
      unpaired.append(item.path)
    sketches.append(item)
  if unpaired:
    logging.warning("%d Sketchy sketch(es) in %s have no photo (kept for category-level "
                    "use), e.g. %s", len(unpaired), root, unpaired[0])
  return PhotosAndSketches(photos, sketches)


def read_class_folders(root: str | os.PathLike, *,
                       policy: BadInputPolicy | None = None) -> PhotosAndSketches:
  """`root/{photo,sketch}/<class>/*` (PACS / TU-Berlin); instance "".

  An empty class folder is an "empty class folder" error (skipped and counted
  under a skip policy).
  """
  policy = policy or BadInputPolicy()
  root = pathlib.Path(root)
  help_ = _layout_help("class-folder", root)
  return PhotosAndSketches(*(_read_tree(root / m, m, policy, help_) for m in MODALITIES))


def read_imagefolder_split(root: str | os.PathLike, split: str, *,
                           policy: BadInputPolicy | None = None) -> PhotosAndSketches:
  """DF-SBIR's ImageFolder layout: `root/<split>/{photo,sketch}/<class>/...`.

  `split` is a folder name, "train" or "test" in the official code.
  """
  policy = policy or BadInputPolicy()
  root = pathlib.Path(root)
  help_ = (f"expected DF-SBIR's ImageFolder layout {root}/{{train,test}}/{{photo,sketch}}/"
           "<class>/<image>")
  return PhotosAndSketches(*(_read_tree(root / split / m, m, policy, help_) for m in MODALITIES))


def read_class_list(path: str | os.PathLike) -> dict[int, str]:
  """A SAKE class list (`cname_cid.txt`, `cname_cid_zero.txt`): lines `name id`
  -> {id: name}. Names may hold spaces; blank lines are ignored."""
  classes: dict[int, str] = {}
  for number, line in _lines(path):
    name, cid = (line.rsplit(maxsplit=1) + [""])[:2]
    if not cid.isdigit():
      raise ImageFormatError(path, number, f"malformed line: expected 'name id', got {line!r}")
    if int(cid) in classes:
      raise ImageFormatError(path, number, f"duplicate id: {cid} names both "
                             f"{classes[int(cid)]!r} and {name!r}")
    classes[int(cid)] = name
  if not classes:
    raise ImageFormatError(path, None, "empty class list: no 'name id' lines")
  return classes


def read_file_list(list_file: str | os.PathLike, image_root: str | os.PathLike,
                   class_list_file: str | os.PathLike, modality: str, *,
                   policy: BadInputPolicy | None = None) -> list[ImageItem]:
  """A SAKE / ZSE-SBIR list of `relative/path label_int` lines, in line order.

  Paths are relative to `image_root`; labels become class names through
  `class_list_file` (the `*_zero` lists index the test classes, 0..n-1).
  Errors name the list file and line: "malformed line", "unknown label" (an id
  not in the class list), "missing file" (no such image under `image_root`).
  """
  if modality not in MODALITIES:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
  policy = policy or BadInputPolicy()
  classes = read_class_list(class_list_file)
  image_root = pathlib.Path(image_root)
  items = []
  for number, line in _lines(list_file):
    relative, label = (line.rsplit(maxsplit=1) + [""])[:2]
    if not label.lstrip("-").isdigit():
      policy.handle(ImageFormatError(list_file, number, "malformed line: expected "
                                     f"'relative/path label_int', got {line!r}"))
    elif int(label) not in classes:
      policy.handle(ImageFormatError(list_file, number, f"unknown label: {label} is not an id "
                                     f"of {class_list_file} (ids {min(classes)}..{max(classes)})"))
    elif not (image_root / relative).is_file():
      policy.handle(ImageFormatError(list_file, number, f"missing file: {image_root / relative} "
                                     "does not exist"))
    else:
      items.append(ImageItem(str(image_root / relative), classes[int(label)], modality))
  return items


def read_quickdraw_bitmaps(folder_or_file: str | os.PathLike,
                           categories: Sequence[str] | None = None,
                           max_per_class: int | None = None) -> list[ImageItem]:
  """QuickDraw `numpy_bitmap` files (`<category>.npy`, uint8 [N, 784]) -> sketch
  items `<file>#<row>`, the first `max_per_class` rows of each category."""
  files = _category_files(folder_or_file, ".npy", categories)
  items = []
  for category, path in files.items():
    rows = _bitmaps(str(path)).shape[0]
    rows = rows if max_per_class is None else min(rows, max_per_class)
    items += [ImageItem(f"{path}#{row}", category, "sketch") for row in range(rows)]
  return items


def read_quickdraw_drawings(folder: str | os.PathLike, categories: Sequence[str] | None = None,
                            max_per_class: int | None = None, *,
                            policy: BadInputPolicy | None = None) -> list[ImageItem]:
  """Simplified QuickDraw ndjson files -> sketch items `<file>#<line>` (1-based),
  the first `max_per_class` valid drawings of each category.

  Every line is parsed here, so a bad one raises (or is counted under a skip
  policy) before training rather than in the middle of it.
  """
  policy = policy or BadInputPolicy()
  items = []
  for category, path in _category_files(folder, ".ndjson", categories).items():
    kept = 0
    for number, line in _lines(path):
      if max_per_class is not None and kept >= max_per_class:
        break
      try:
        _simplified_strokes(_parse_line(line).sketch.strokes)
      except ValueError as e:
        policy.handle(SketchFormatError(path, number, str(e)))
        continue
      items.append(ImageItem(f"{path}#{number}", category, "sketch"))
      kept += 1
  return items


def load_image(item: ImageItem, *, vector_size: int = 256) -> np.ndarray:
  """Decodes an item -> uint8 [H, W, 3] RGB; sketches are black ink on white.

  Image files are decoded whole with PIL (grey and palette converted to RGB,
  transparency composited over white); a truncated or corrupt file raises
  "unreadable image" rather than being padded (as long as PIL's global
  `ImageFile.LOAD_TRUNCATED_IMAGES` keeps its default, False). QuickDraw
  bitmap rows (white ink on black) come back inverted, 28 x 28. QuickDraw
  drawings are rendered vector_size x vector_size as the official bitmaps
  are drawn (`render_drawing`). Errors are `SketchFormatError`s naming the file
  (`ImageFormatError` for images and bitmaps, the ndjson line for drawings).
  """
  if not _is_quickdraw(item.path):
    return _decode_file(item.path)
  base, _, index = item.path.rpartition("#")
  if base.endswith(".npy"):
    return _bitmap_image(base, int(index))
  return _drawing_image(base, int(index), vector_size)


def verify_images(items: Sequence[ImageItem], *,
                  policy: BadInputPolicy | None = None) -> list[ImageItem]:
  """The items whose image file decodes, in order; a bad file raises its
  `ImageFormatError` or, under a skip policy, is counted and dropped.

  QuickDraw items are kept as they are: their files were checked when read.
  """
  policy = policy or BadInputPolicy()
  kept = []
  for item in items:
    if not _is_quickdraw(item.path):
      try:
        _decode_file(item.path)
      except ImageFormatError as e:
        policy.handle(e)
        continue
    kept.append(item)
  return kept


def _is_quickdraw(path: str) -> bool:
  base, hash_, index = path.rpartition("#")
  return bool(hash_) and index.isdigit() and base.endswith((".npy", ".ndjson"))


def _decode_file(path: str) -> np.ndarray:
  try:
    with Image.open(path) as image:
      image.load()
      if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
      return np.asarray(image.convert("RGB"))
  except FileNotFoundError:
    raise ImageFormatError(path, None, "missing file: no such image") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ImageFormatError(path, None, f"unreadable image: {e}") from None


@functools.lru_cache(maxsize=64)
def _bitmaps(path: str) -> np.ndarray:
  """A bitmap file, memory-mapped: uint8 [N, 784]."""
  try:
    bitmaps = np.load(path, mmap_mode="r")
  except FileNotFoundError:
    raise ImageFormatError(path, None, "missing file: no such bitmap file") from None
  except (OSError, ValueError) as e:
    raise ImageFormatError(path, None, f"unreadable bitmaps: {e}") from None
  if bitmaps.dtype != np.uint8 or bitmaps.ndim != 2 or bitmaps.shape[1] != _BITMAP_SIDE ** 2:
    raise ImageFormatError(path, None, f"bad bitmaps: expected uint8 [N, 784], got "
                           f"{bitmaps.dtype} {list(bitmaps.shape)}")
  return bitmaps


def _bitmap_image(path: str, row: int) -> np.ndarray:
  bitmaps = _bitmaps(path)
  if row >= len(bitmaps):
    raise ImageFormatError(path, row, f"no such row: the file has {len(bitmaps)}")
  ink = np.asarray(bitmaps[row]).reshape(_BITMAP_SIDE, _BITMAP_SIDE)
  return np.repeat((255 - ink)[..., None], 3, axis=-1)


@functools.lru_cache(maxsize=64)
def _line_starts(path: str) -> np.ndarray:
  """Byte offset of every line of a file: int64 [lines]."""
  starts, offset = [], 0
  with open(path, "rb") as f:
    for raw in f:
      starts.append(offset)
      offset += len(raw)
  return np.asarray(starts, np.int64)


def drawing_strokes(item: ImageItem) -> Sequence[np.ndarray]:
  """The strokes of a QuickDraw drawing item `<file.ndjson>#<line>` (1-based), in the
  order they were drawn: float[n, 2] each, simplified 0..255 coordinates."""
  base, _, index = item.path.rpartition("#")
  if not (_is_quickdraw(item.path) and base.endswith(".ndjson")):
    raise ValueError(f"{item.path}: not a QuickDraw drawing (<file.ndjson>#<line>)")
  return _drawing_strokes(base, int(index))


def _drawing_image(path: str, number: int, size: int) -> np.ndarray:
  return render_drawing(_drawing_strokes(path, number), size)


def _drawing_strokes(path: str, number: int) -> Sequence[np.ndarray]:
  try:
    starts = _line_starts(path)
  except FileNotFoundError:
    raise ImageFormatError(path, None, "missing file: no such ndjson file") from None
  if not 1 <= number <= len(starts):
    raise ImageFormatError(path, number, f"no such line: the file has {len(starts)}")
  with open(path, "rb") as f:
    f.seek(starts[number - 1])
    raw = f.readline()
  try:
    strokes = _simplified_strokes(_parse_line(raw.decode("utf-8")).sketch.strokes)
  except (UnicodeDecodeError, ValueError) as e:
    raise SketchFormatError(path, number, str(e)) from None
  return strokes


_SUPERSAMPLE = 4


def render_drawing(strokes: Sequence[np.ndarray], size: int) -> np.ndarray:
  """Simplified strokes (x, y in 0..255) -> uint8 [size, size, 3], black ink on white.

  The official bitmaps' geometry (`soft_rasterize.official_pixels`: the drawing
  centred on the 256 canvas, line 16 and padding 16 canvas units, round caps
  and joins) scaled to `size`, drawn with PIL at 4x and box-filtered down for
  the anti-aliasing: about a millisecond a drawing, where the differentiable
  soft rasteriser (`soft_rasterize`, 1.5/255 from cairo) takes about a second
  on this CPU. At 28 px it differs from the official cairo renders by about
  6/255 a pixel on average (2%; tested).
  """
  scale = size / soft_rasterize.OFFICIAL.size * _SUPERSAMPLE
  radius = soft_rasterize.OFFICIAL.line_width * scale / 2
  canvas = Image.new("L", (size * _SUPERSAMPLE,) * 2, 255)
  draw = ImageDraw.Draw(canvas)
  for stroke in soft_rasterize.official_pixels(strokes):
    points = [tuple(p) for p in (np.asarray(stroke) * scale).tolist()]
    if len(points) > 1:
      draw.line(points, fill=0, width=max(1, round(2 * radius)), joint="curve")
    for x, y in points:  # Round caps (and joins of sharp turns).
      draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
  grey = np.asarray(canvas.reduce(_SUPERSAMPLE))
  return np.repeat(grey[..., None], 3, axis=-1)


def _simplified_strokes(strokes: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
  """The strokes, or ValueError if a coordinate is outside simplified 0..255."""
  points = np.concatenate(strokes)
  if points.min() < 0 or points.max() > _QUICKDRAW_MAX:
    raise ValueError(f"not simplified: coordinates span {points.min():g}..{points.max():g}, "
                     "simplified QuickDraw drawings lie in 0..255 (raw drawings are not rendered)")
  return strokes


def _read_tree(folder: pathlib.Path, modality: str, policy: BadInputPolicy,
               layout_help: str) -> list[ImageItem]:
  """Items of `folder/<class>/**/<image>`, sorted by path; empty classes go to `policy`."""
  if not folder.is_dir():
    raise FileNotFoundError(f"no {modality} folder at {folder}: {layout_help}")
  class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
  if not class_dirs:
    raise ImageFormatError(folder, None, f"no class folders: {layout_help}")
  items = []
  for class_dir in class_dirs:
    files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and p.is_file() and not p.name.startswith("."))
    if not files:
      policy.handle(ImageFormatError(class_dir, None, "empty class folder: no image files "
                                     f"({', '.join(IMAGE_SUFFIXES)})"))
    items += [ImageItem(str(p), class_dir.name, modality) for p in files]
  return sorted(items)


def _layout_help(name: str, root: pathlib.Path) -> str:
  return f"expected the {name} layout {root}/{{photo,sketch}}/<class>/<image>"


def _category_files(folder_or_file: str | os.PathLike, suffix: str,
                    categories: Sequence[str] | None) -> dict[str, pathlib.Path]:
  """{category: `<category><suffix>` file} in class-id order, restricted to `categories`."""
  path = pathlib.Path(folder_or_file)
  if path.is_file() and path.suffix == suffix:
    files = {path.stem: path}
  elif path.is_dir():
    files = {p.stem: p for p in path.glob(f"*{suffix}") if p.is_file()}
  else:
    raise FileNotFoundError(f"no {suffix} file or folder of {suffix} files at {path}")
  if not files:
    raise ImageFormatError(path, None, f"no category files: no *{suffix} in the folder")
  if categories is not None:
    unknown = sorted(set(categories) - set(files))
    if unknown:
      raise ValueError(f"categories not in {path}: {unknown} (it has {sort_categories(files)})")
    files = {c: files[c] for c in categories}
  return {c: files[c] for c in sort_categories(files)}


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
  """(1-based number, stripped text) of the non-blank lines of a UTF-8 file."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8").strip()
      except UnicodeDecodeError as e:
        raise ImageFormatError(path, number, f"not UTF-8 text: {e}") from None
      if line:
        yield number, line
