"""grain pipelines of retrieval images: (sketch, photo) training pairs, ZSE-SBIR's
training items and eval batches.

A source is a random-access sequence of images of one modality, either

  * a `tfds.data_source` split of `sketchjax.data.tfds_sbir` (records with
    encoded "image" bytes, "label", "instance", "modality", "file_name"), or
  * an `ItemSource`: a list of `ImageItem` in memory, decoded with
    `image_folders.load_image`.

Both give the same batches for the same items in the same order (the TFDS
builder keeps the split's order). Per image: decode to uint8 [H, W, 3], then
`preprocess(image, modality)` -> float32 [S, S, 3] (`image_preprocess`).

As in `pipeline.py`, every process reads only its interleaved share of each
global batch (process p takes elements p, p + P, ... of the global order), the
order is shuffled with a seed (a new order each epoch), and the training
iterator is a grain `DatasetIterator` whose state restores it exactly. Batches
are host-local numpy; the trainer makes them global (`mesh.to_global`).

Decoding JPEGs is the slow part on a CPU. With `cache=True` each image is
decoded and preprocessed once and its float array kept in memory (about
S*S*12 bytes an image: 0.6 MB at 224, 48 KB at 64), which suits the small
subsets; leave it off for the full datasets.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

import grain
import jax
import numpy as np
from PIL import Image

from sketchjax.data.formats.image_folders import load_image
from sketchjax.data.image_items import ImageItem
from sketchjax.data.pipeline import process_batch_size

Preprocess = Callable[[np.ndarray, str], np.ndarray]  # (uint8 [H,W,3], modality) -> [S,S,3]
Pairing = Literal["instance", "class", "random"]


class ImageSource(Protocol):
  """What the pipelines read: per image a label, instance, modality and pixels."""

  labels: np.ndarray  # int32 [N]
  instances: tuple[str, ...]
  modalities: tuple[str, ...]
  names: tuple[str, ...]  # file names, for messages

  def __len__(self) -> int: ...

  def image(self, index: int) -> np.ndarray:
    """uint8 [H, W, 3]."""


class ItemSource:
  """An in-memory source over `ImageItem`s; images decoded with `load_image`.

  Args:
    items: the images, in order.
    classes: class names; an item's label is the index of its class here
      (use the split side's `classes`, as the TFDS builder does).
  """

  def __init__(self, items: Sequence[ImageItem], classes: Sequence[str]):
    self.items = tuple(items)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({item.label for item in self.items} - set(index))
    if unknown:
      raise ValueError(f"classes {unknown[:5]} of the items are not in the class list "
                       f"({len(index)} classes)")
    self.labels = np.array([index[item.label] for item in self.items], np.int32)
    self.instances = tuple(item.instance for item in self.items)
    self.modalities = tuple(item.modality for item in self.items)
    self.names = tuple(item.path for item in self.items)

  def __len__(self) -> int:
    return len(self.items)

  def image(self, index: int) -> np.ndarray:
    return load_image(self.items[index])


class TfdsImageSource:
  """A `tfds.data_source` split of `tfds_sbir` as an `ImageSource`.

  Reads every record's metadata once (not its pixels) at construction.
  """

  def __init__(self, records: Sequence[dict[str, Any]]):
    self.records = records
    metadata = [records[i] for i in range(len(records))]
    self.labels = np.array([r["label"] for r in metadata], np.int32)
    self.instances = tuple(_text(r["instance"]) for r in metadata)
    self.modalities = tuple(_text(r["modality"]) for r in metadata)
    self.names = tuple(_text(r["file_name"]) for r in metadata)

  def __len__(self) -> int:
    return len(self.records)

  def image(self, index: int) -> np.ndarray:
    return decode_image(self.records[index]["image"], self.names[index])


def _text(value: bytes | str) -> str:
  return value.decode() if isinstance(value, bytes) else value


def decode_image(data: bytes, where: str) -> np.ndarray:
  """PNG/JPEG bytes -> uint8 [H, W, 3] RGB, as `load_image` decodes a file
  (transparency composited over white); ValueError naming `where` if unreadable."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
      return np.asarray(image.convert("RGB"))
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise ValueError(f"{where}: unreadable image: {error}") from None


def as_image_source(source: ImageSource | Sequence[dict[str, Any]]) -> ImageSource:
  """`source` itself if it is an `ImageSource`, else a TFDS split wrapped."""
  if isinstance(source, (ItemSource, TfdsImageSource)):
    return source
  return TfdsImageSource(source)


class _Pixels:
  """index -> preprocessed float32 [S, S, 3], optionally cached in memory."""

  def __init__(self, source: ImageSource, preprocess: Preprocess, cache: bool):
    self.source, self.preprocess = source, preprocess
    self.cache: dict[int, np.ndarray] | None = {} if cache else None

  def __call__(self, index: int) -> np.ndarray:
    if self.cache is not None and index in self.cache:
      return self.cache[index]
    pixels = np.asarray(self.preprocess(self.source.image(index),
                                        self.source.modalities[index]), np.float32)
    if self.cache is not None:
      self.cache[index] = pixels
    return pixels


def _instance_partners(photos: ImageSource, sketches: ImageSource) -> np.ndarray:
  """int [num_sketches]: the index of each sketch's own photo."""
  own: dict[tuple[int, str], int] = {}
  for i, key in enumerate(zip(photos.labels.tolist(), photos.instances)):
    if key in own:
      raise ValueError(f"{photos.names[i]}: photo id {key[1]!r} occurs twice (also "
                       f"{photos.names[own[key]]})")
    own[key] = i
  partners = []
  for i, key in enumerate(zip(sketches.labels.tolist(), sketches.instances)):
    if key not in own:
      raise ValueError(f"{sketches.names[i]}: no photo {key[1]!r} of label {key[0]} in the "
                       "photo source, which instance pairing needs (pairing='class' "
                       "pairs by class instead)")
    partners.append(own[key])
  return np.array(partners, np.int64)


def _class_members(photos: ImageSource, sketches: ImageSource) -> dict[int, np.ndarray]:
  """{label: int [n] indices of its photos}, for every sketch label."""
  members = {label: np.flatnonzero(photos.labels == label)
             for label in np.unique(sketches.labels).tolist()}
  empty = sorted(label for label, indices in members.items() if not len(indices))
  if empty:
    raise ValueError(f"labels {empty[:5]} have sketches but no photo in the photo source")
  return members


@dataclasses.dataclass(frozen=True)
class _ClassPartner:
  """sketch index -> (sketch index, a photo of its class drawn with the element's rng)."""

  labels: np.ndarray
  members: dict[int, np.ndarray]

  def __call__(self, sketch: int, rng: np.random.Generator) -> tuple[int, int]:
    choices = self.members[int(self.labels[sketch])]
    return sketch, int(choices[rng.integers(len(choices))])


@dataclasses.dataclass(frozen=True)
class _AnyPartner:
  """sketch index -> (sketch index, a photo drawn uniformly with the element's rng)."""

  count: int

  def __call__(self, sketch: int, rng: np.random.Generator) -> tuple[int, int]:
    return sketch, int(rng.integers(self.count))


def pair_train_iterator(photo_source, sketch_source, *, global_batch_size: int, seed: int,
                        preprocess: Preprocess, pairing: Pairing = "instance",
                        cache: bool = False) -> grain.DatasetIterator:
  """Endless shuffled (sketch, photo) pairs of this process's share; checkpointable.

  An epoch is one pass over the sketches in a seeded order (a new order each
  epoch). Each sketch is paired with its own photo ("instance": same label
  and photo id) or with a photo of its class drawn with a generator seeded by
  `seed` and the element's global position ("class"), or with any photo drawn
  the same way ("random": unpaired images, e.g. CrossX-DFL's alternative-data
  baseline), so the pairs do not depend on the number of processes.

  Returns:
    batches {"sketch": float32 [b, S, S, 3], "photo": float32 [b, S, S, 3],
    "label": int32 [b]}, b = global_batch_size / process count.
  """
  photos, sketches = as_image_source(photo_source), as_image_source(sketch_source)
  if not len(sketches) or not len(photos):
    raise ValueError(f"empty training source ({len(sketches)} sketches, {len(photos)} photos)")
  ds = grain.MapDataset.range(len(sketches)).seed(seed).shuffle().repeat()
  if pairing == "instance":
    partners = _instance_partners(photos, sketches)
    ds = ds.map(lambda sketch: (sketch, int(partners[sketch])))
  elif pairing == "class":
    ds = ds.random_map(_ClassPartner(sketches.labels, _class_members(photos, sketches)))
  elif pairing == "random":
    ds = ds.random_map(_AnyPartner(len(photos)))
  else:
    raise ValueError(f"pairing must be 'instance', 'class' or 'random', got {pairing!r}")
  ds = ds[jax.process_index()::jax.process_count()]
  sketch_pixels = _Pixels(sketches, preprocess, cache)
  photo_pixels = _Pixels(photos, preprocess, cache)

  def read(pair: tuple[int, int]) -> dict[str, np.ndarray]:
    sketch, photo = pair
    return {"sketch": sketch_pixels(sketch), "photo": photo_pixels(photo),
            "label": np.int32(sketches.labels[sketch])}

  ds = ds.map(read).to_iter_dataset()
  return iter(ds.batch(process_batch_size(global_batch_size), drop_remainder=True,
                       batch_fn=_stack))


@dataclasses.dataclass(frozen=True)
class ZseDraw:
  """element -> file indices of one ZSE-SBIR training item (spec 3.5): three
  distinct classes c0, c1, c2 (c1 unused, as the code), a sketch s, a second
  sketch s- and a photo p+ of c0, a photo p- of c2. Files are uniform over the
  class; `official_off_by_one` draws them as the code's randint(1, n), which
  never picks a class's first file (and fails on a class of one file)."""

  sketch_members: dict[int, np.ndarray]
  photo_members: dict[int, np.ndarray]
  official_off_by_one: bool = False

  def _file(self, members: np.ndarray, rng: np.random.Generator) -> int:
    low = 1 if self.official_off_by_one else 0
    if len(members) <= low:
      raise ValueError("the official sampler's randint(1, n) needs 2 files a class, got "
                       f"{len(members)}")
    return int(members[rng.integers(low, len(members))])

  def __call__(self, element: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    del element
    c0, _, c2 = rng.choice(sorted(self.sketch_members), 3, replace=False).tolist()
    return (self._file(self.sketch_members[c0], rng), self._file(self.sketch_members[c0], rng),
            self._file(self.photo_members[c0], rng), self._file(self.photo_members[c2], rng))


def zse_train_iterator(photo_source, sketch_source, *, global_batch_size: int, seed: int,
                       preprocess: Preprocess, official_off_by_one: bool = False,
                       cache: bool = False) -> grain.DatasetIterator:
  """Endless ZSE-SBIR training items (`ZseDraw`), seeded per global element, so
  the items do not depend on the number of processes; checkpointable.

  Returns batches {"sketch", "sketch_negative", "photo_positive",
  "photo_negative": float32 [b, S, S, 3], "label", "negative_label": int32 [b]},
  b = global_batch_size / process count; the model sees sketches [s; s-] and
  photos [p+; p-] (pairs (s, p+) positive, (s-, p-) negative).
  """
  photos, sketches = as_image_source(photo_source), as_image_source(sketch_source)
  sketch_members = {label: np.flatnonzero(sketches.labels == label)
                    for label in np.unique(sketches.labels).tolist()}
  if len(sketch_members) < 3:
    raise ValueError(f"the ZSE-SBIR sampler needs 3 training classes, got {len(sketch_members)}")
  draw = ZseDraw(sketch_members, _class_members(photos, sketches), official_off_by_one)
  ds = grain.MapDataset.range(2**40).seed(seed).random_map(draw)
  ds = ds[jax.process_index()::jax.process_count()]
  sketch_pixels = _Pixels(sketches, preprocess, cache)
  photo_pixels = _Pixels(photos, preprocess, cache)

  def read(item: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    sketch, negative_sketch, positive, negative = item
    return {"sketch": sketch_pixels(sketch), "sketch_negative": sketch_pixels(negative_sketch),
            "photo_positive": photo_pixels(positive), "photo_negative": photo_pixels(negative),
            "label": np.int32(sketches.labels[sketch]),
            "negative_label": np.int32(photos.labels[negative])}

  ds = ds.map(read).to_iter_dataset()
  return iter(ds.batch(process_batch_size(global_batch_size), drop_remainder=True,
                       batch_fn=_stack))


def image_eval_batches(source, *, global_batch_size: int, preprocess: Preprocess,
                       cache: bool = False) -> Iterable[dict[str, np.ndarray]]:
  """One pass over the source in order, padded to whole global batches.

  Every process gets the same number of batches. Padding rows repeat the
  last image with weight 0 and index -1.

  Returns:
    batches {"image": float32 [b, S, S, 3], "label": int32 [b], "index": int32
    [b] (position in the source), "weight": float32 [b]}.
  """
  images = as_image_source(source)
  size = len(images)
  if not size:
    raise ValueError("the evaluation source is empty")
  padded = math.ceil(size / global_batch_size) * global_batch_size
  pixels = _Pixels(images, preprocess, cache)

  def read(index: int) -> dict[str, np.ndarray]:
    real = index < size
    item = index if real else size - 1
    return {"image": pixels(item), "label": np.int32(images.labels[item]),
            "index": np.int32(index if real else -1), "weight": np.float32(real)}

  ds = grain.MapDataset.range(padded)[jax.process_index()::jax.process_count()].map(read)
  return ds.to_iter_dataset().batch(process_batch_size(global_batch_size),
                                    drop_remainder=True, batch_fn=_stack)


def _stack(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {key: np.stack([row[key] for row in rows]) for key in rows[0]}
