"""Train/test splits of the retrieval (SBIR) experiments, fixed by file name.

Every split is a pure function of the file names: no RNG state. Where a
subset has to be chosen (the test photos of a class, the QuickDraw drawings
kept), items are ranked by the SHA-1 of their id (a photo id such as
"n02691156_10151", or "extra/simplified/dog.ndjson#3" for a QuickDraw drawing) and
the first ones are taken, so the choice does not depend on folder order or on
where the data lives.

Counts on the project's real data (`../shared/data`: Sketchy 125 classes x 25
sketches / 25 photos, the sketches drawn from 3-5 of the photos; PACS /
TU-Berlin 7 classes; QuickDraw simplified + extra), as `make_split` gives them
with its defaults (train photos / sketches | test photos / sketches, classes):

  category              2500 / 2423 | 625 / 702   125 | 125 classes
  zeroshot_sketchy25    2500 / 2500 | 625 / 625   100 | 25
  zeroshot_sketchy21    2600 / 2600 | 525 / 525   104 | 21
  finegrained_sketchy25  465 / 2500 | 113 / 625   100 | 25
  finegrained_sketchy21  482 / 2600 |  96 / 525   104 | 21
  cross_pacs            3125 / 3125 | 700 / 640   125 | 7
  cross_pacs_unseen     3000 / 3000 | 700 / 640   120 | 7
  quickdraw_photo       1900 / 3751 | 475 / 938    95 | 95   (sketches: QuickDraw
                                                            drawings, at most 100 a class)
  pacs                   560 /  512 | 140 / 128     7 | 7    (PACS photos, TU-Berlin
                                                            sketches; no Sketchy)

(`tests/test_sbir_splits.py` checks these numbers.) The subset has 25 pairs a
class where the full Sketchy has about 100 photos and 600 sketches a class.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Literal

from sketchjax.data.formats.image_folders import (read_class_folders, read_quickdraw_drawings,
                                                  read_sketchy)
from sketchjax.data.image_items import ImageItem, Modality
from sketchjax.data.records import BadInputPolicy, SketchFormatError

Pairing = Literal["instance", "class"]

# SAKE's 25 unseen Sketchy classes (spec 1.1, ZSE-SBIR `test_class_sketchy25`).
SKETCHY25_UNSEEN: tuple[str, ...] = (
    "cup", "swan", "harp", "squirrel", "snail", "ray", "pineapple", "volcano", "rifle",
    "scissors", "parrot", "windmill", "teddy_bear", "tree", "wine_bottle", "deer", "chicken",
    "airplane", "wheelchair", "tank", "umbrella", "butterfly", "camel", "horse", "bell")
# Yelamarthi et al.'s 21 unseen Sketchy classes (spec 1.1, `test_class_sketchy21`).
SKETCHY21_UNSEEN: tuple[str, ...] = (
    "bat", "cabin", "cow", "dolphin", "door", "giraffe", "helicopter", "mouse", "pear",
    "raccoon", "rhinoceros", "saw", "scissors", "seagull", "skyscraper", "songbird", "sword",
    "tree", "wheelchair", "windmill", "window")
# Both lists use the official Sketchy folder names (`teddy_bear`,
# `wine_bottle`), which are the folder names of ../shared/data/sketchy: all 46
# names exist there, no renaming is needed (the tests check it).

# The Sketchy classes that are also PACS / TU-Berlin classes (PACS's `house`
# and `person` are not Sketchy classes).
PACS_IN_SKETCHY: tuple[str, ...] = ("dog", "elephant", "giraffe", "guitar", "horse")

# QuickDraw category -> Sketchy class, only where both name the same thing:
# 89 identical names (QuickDraw's spaces are Sketchy's underscores) and 6
# renamings, 95 classes. Left out: QuickDraw "mouse" (its drawings mix the
# animal and the computer mouse; Sketchy's is the animal) and "fan" (QuickDraw
# also has "ceiling fan"), and near matches such as "monkey" / Sketchy "ape"
# and "bird" / "songbird" or "wading_bird".
QUICKDRAW_TO_SKETCHY: dict[str, str] = {
    **{name: name.replace(" ", "_") for name in (
        "airplane", "alarm clock", "ant", "apple", "axe", "banana", "bat", "bear", "bee",
        "bench", "bicycle", "bread", "butterfly", "camel", "candle", "cannon", "castle", "cat",
        "chair", "church", "couch", "cow", "crab", "cup", "dog", "dolphin", "door", "duck",
        "elephant", "eyeglasses", "fish", "flower", "frog", "giraffe", "guitar", "hamburger",
        "hammer", "harp", "hat", "hedgehog", "helicopter", "horse", "hourglass", "kangaroo",
        "knife", "lion", "lobster", "mushroom", "owl", "parrot", "pear", "penguin", "piano",
        "pickup truck", "pig", "pineapple", "pizza", "rabbit", "raccoon", "rhinoceros", "rifle",
        "sailboat", "saw", "saxophone", "scissors", "scorpion", "sea turtle", "shark", "sheep",
        "shoe", "skyscraper", "snail", "snake", "spider", "spoon", "squirrel", "strawberry",
        "swan", "sword", "table", "teapot", "tiger", "tree", "trumpet", "umbrella", "violin",
        "windmill", "wine bottle", "zebra")},
    "car": "car_(sedan)",
    "crocodile": "crocodilian",
    "hot air balloon": "hot-air_balloon",
    "hot dog": "hotdog",
    "motorbike": "motorcycle",
    "teddy-bear": "teddy_bear",
}


@dataclasses.dataclass(frozen=True)
class SplitSide:
  """The images of one side (train or test) of a split.

  Attributes:
    photos, sketches: sorted by (label, path).
    classes: the side's class names, sorted; an image's integer label is the
      index of its class here (so test labels of a zero-shot split run over the
      unseen classes, 0..n_test-1, as in SAKE's `*_zero` lists).
  """

  photos: tuple[ImageItem, ...]
  sketches: tuple[ImageItem, ...]
  classes: tuple[str, ...]

  def items(self, modality: Modality) -> tuple[ImageItem, ...]:
    """`photos` or `sketches`."""
    return {"photo": self.photos, "sketch": self.sketches}[modality]

  def label_index(self, item: ImageItem) -> int:
    """The integer label of `item` on this side."""
    return self.classes.index(item.label)


@dataclasses.dataclass(frozen=True)
class SbirSplit:
  """A retrieval split.

  Attributes:
    name: as given to `make_split`.
    train, test: the two sides.
    pairing: how training pairs a sketch with a photo: "instance" (its own
      photo; Sketchy) or "class" (any photo of its class; QuickDraw has no
      instances).
    relevance: what a test photo must share with a sketch query to count as
      a hit: "class", or "instance" (fine-grained: its own photo only).
  """

  name: str
  train: SplitSide
  test: SplitSide
  pairing: Pairing
  relevance: Literal["class", "instance"]

  def counts(self) -> dict[str, int]:
    """{"train_photo": n, "train_sketch": n, "test_photo": n, "test_sketch": n}."""
    return {f"{side}_{modality}": len(getattr(self, side).items(modality))
            for side in ("train", "test") for modality in ("photo", "sketch")}


def _side(items: Iterable[ImageItem]) -> SplitSide:
  items = sorted(items, key=lambda item: (item.label, item.path))
  photos = tuple(item for item in items if item.modality == "photo")
  sketches = tuple(item for item in items if item.modality == "sketch")
  return SplitSide(photos, sketches, tuple(sorted({item.label for item in items})))


def _rank(ids: Iterable[str]) -> list[str]:
  """The ids ordered by SHA-1 (then by id): a fixed order that looks random."""
  return sorted(set(ids), key=lambda i: (hashlib.sha1(i.encode()).hexdigest(), i))


def _first_share(ids: Iterable[str], fraction: float) -> set[str]:
  """The first round(n * fraction) ids in `_rank` order."""
  ranked = _rank(ids)
  return set(ranked[:round(len(ranked) * fraction)])


def _check_fraction(test_fraction: float) -> None:
  if not 0.0 <= test_fraction <= 1.0:
    raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")


def _by_class(items: Iterable[ImageItem]) -> dict[str, list[ImageItem]]:
  groups: dict[str, list[ImageItem]] = {}
  for item in items:
    groups.setdefault(item.label, []).append(item)
  return groups


def _need_instances(sketches: Iterable[ImageItem], split: str) -> None:
  for sketch in sketches:
    if not sketch.instance:
      raise ValueError(f"{sketch.path}: the {split} split needs each sketch's photo id "
                       "(ImageItem.instance), and this sketch has none")


def category_split(items: Sequence[ImageItem], test_fraction: float = 0.2) -> SbirSplit:
  """Category-level: every class on both sides, photos split by photo id.

  Per class, the photo ids that have sketches and those that have none are
  each ranked by SHA-1 and their first round(n * test_fraction) go to test
  (so each side keeps sketch queries); every sketch goes with its photo id,
  so no instance is on both sides. On the real subset with 0.2: per class 1
  sketched and 4 other photos are test.

  Args:
    items: Sketchy photos and sketches, with `instance` set.
  """
  _check_fraction(test_fraction)
  sketches = [item for item in items if item.modality == "sketch"]
  _need_instances(sketches, "category")
  test_ids: set[tuple[str, str]] = set()
  for label, group in _by_class(items).items():
    drawn = {item.instance for item in group if item.modality == "sketch"}
    undrawn = {item.instance for item in group if item.modality == "photo"} - drawn
    test_ids |= {(label, i) for i in _first_share(drawn, test_fraction)}
    test_ids |= {(label, i) for i in _first_share(undrawn, test_fraction)}
  test = [item for item in items if (item.label, item.instance) in test_ids]
  train = [item for item in items if (item.label, item.instance) not in test_ids]
  return SbirSplit("category", _side(train), _side(test), "instance", "class")


def seen_heldout_split(split: SbirSplit, fraction: float = 0.2) -> SbirSplit:
  """Model selection without the test classes: `split`'s training side divided as
  `category_split` divides it (per class, the sketched photo ids and the other
  photo ids each ranked by SHA-1, the first round(n * fraction) of each held out,
  every sketch with its photo). Returns `<name>_seen_heldout`: train = the rest
  (what to train on), test = the held-out items (what to select on); relevance
  by class. On the real Sketchy-25 subset with 0.2: per seen class 1 sketched and
  4 other photos held out (with that photo's sketches).
  """
  held = category_split(split.train.photos + split.train.sketches, fraction)
  return dataclasses.replace(held, name=f"{split.name}_seen_heldout",
                             pairing=split.pairing, relevance="class")


def _unseen_classes(items: Sequence[ImageItem], unseen: Sequence[str],
                    list_name: str) -> set[str]:
  present = {item.label for item in items}
  missing = sorted(set(unseen) - present)
  if missing:
    raise ValueError(f"the {list_name} unseen classes {missing} have no images in the "
                     f"data (it has {len(present)} classes): check the Sketchy folder "
                     "names")
  return set(unseen)


def zeroshot_split(items: Sequence[ImageItem], unseen: Sequence[str] = SKETCHY25_UNSEEN,
                   name: str = "zeroshot_sketchy25") -> SbirSplit:
  """Zero-shot category-level: the `unseen` classes are test, the rest train.

  Raises:
    ValueError: when an unseen class has no image in `items`.
  """
  test_classes = _unseen_classes(items, unseen, name)
  train = [item for item in items if item.label not in test_classes]
  test = [item for item in items if item.label in test_classes]
  return SbirSplit(name, _side(train), _side(test), "instance", "class")


def finegrained_split(items: Sequence[ImageItem], unseen: Sequence[str] = SKETCHY25_UNSEEN,
                      name: str = "finegrained_sketchy25",
                      policy: BadInputPolicy | None = None) -> SbirSplit:
  """Fine-grained zero-shot: instance pairs, test inside the unseen classes.

  Each side keeps its sketches and the photos that have sketches (photos
  without a sketch are dropped); a test sketch's one relevant photo is its
  own. The gallery of the test side is thus the sketched photos of the unseen
  classes (3-5 a class on the subset).

  Raises:
    SketchFormatError: for a sketch whose photo is not in `items` (counted
      and the sketch left out instead when `policy.on_error == "skip"`).
  """
  policy = policy or BadInputPolicy()
  test_classes = _unseen_classes(items, unseen, name)
  sketches = [item for item in items if item.modality == "sketch"]
  _need_instances(sketches, name)
  photos = {(item.label, item.instance): item for item in items if item.modality == "photo"}
  kept: list[ImageItem] = []
  for sketch in sketches:
    photo = photos.get((sketch.label, sketch.instance))
    if photo is None:
      policy.handle(SketchFormatError(
          sketch.path, None, f"missing photo: no photo {sketch.instance!r} of class "
          f"{sketch.label!r}, which fine-grained pairs need"))
      continue
    kept += [sketch, photo]
  kept = list(dict.fromkeys(kept))  # a photo once, however many sketches it has
  train = [item for item in kept if item.label not in test_classes]
  test = [item for item in kept if item.label in test_classes]
  return SbirSplit(name, _side(train), _side(test), "instance", "instance")


def cross_dataset_split(sketchy: Sequence[ImageItem], pacs: Sequence[ImageItem],
                        exclude_shared_classes: bool = False) -> SbirSplit:
  """Train on Sketchy, test on PACS / TU-Berlin (640 sketches, 700 photos).

  Five of the seven PACS classes are Sketchy classes (`PACS_IN_SKETCHY`):
  by default they stay in training ("cross_pacs": a change of dataset); with
  `exclude_shared_classes` they are left out of it ("cross_pacs_unseen": new
  dataset and unseen classes).
  """
  dropped = set(PACS_IN_SKETCHY) if exclude_shared_classes else set()
  train = [item for item in sketchy if item.label not in dropped]
  name = "cross_pacs_unseen" if exclude_shared_classes else "cross_pacs"
  return SbirSplit(name, _side(train), _side(pacs), "instance", "class")


def quickdraw_photo_split(drawings: Sequence[ImageItem], sketchy: Sequence[ImageItem],
                          test_fraction: float = 0.2,
                          max_drawings_per_class: int | None = 100) -> SbirSplit:
  """QuickDraw drawings as queries, Sketchy photos of the same classes as gallery.

  Classes: those of `QUICKDRAW_TO_SKETCHY` that have both drawings and
  photos; drawings are relabelled with the Sketchy name. Per class, the
  drawings are ranked by SHA-1 of the last three parts of their path
  ("quickdraw/simplified/dog.ndjson#3") and the first
  `max_drawings_per_class` kept; drawings and photos are each split with
  their first round(n * test_fraction) in that order as test. Sketchy
  sketches are not used. Training pairs are by class (QuickDraw drawings have
  no photo).

  Args:
    drawings: QuickDraw sketches labelled with QuickDraw names, paths
      `<file.ndjson>#<line>` (or `<file.npy>#<row>`); other classes ignored.
    sketchy: Sketchy items (its photos are used).
  """
  _check_fraction(test_fraction)
  if max_drawings_per_class is not None and max_drawings_per_class < 1:
    raise ValueError(f"max_drawings_per_class must be None or >= 1, got "
                     f"{max_drawings_per_class}")
  photos = _by_class(item for item in sketchy if item.modality == "photo")
  queries = _by_class(dataclasses.replace(item, label=QUICKDRAW_TO_SKETCHY[item.label])
                      for item in drawings if item.label in QUICKDRAW_TO_SKETCHY)
  train: list[ImageItem] = []
  test: list[ImageItem] = []
  for label in sorted(set(photos) & set(queries)):
    by_id = {_path_id(item): item for item in queries[label]}
    kept = _rank(by_id)[:max_drawings_per_class]
    test_drawings = _first_share(kept, test_fraction)
    test_photos = _first_share((p.instance or p.path for p in photos[label]), test_fraction)
    for i in kept:
      (test if i in test_drawings else train).append(by_id[i])
    for photo in photos[label]:
      (test if (photo.instance or photo.path) in test_photos else train).append(photo)
  if not test:
    raise ValueError("no class has both QuickDraw drawings and Sketchy photos "
                     "(see QUICKDRAW_TO_SKETCHY)")
  return SbirSplit("quickdraw_photo", _side(train), _side(test), "class", "class")


def pacs_split(pacs: Sequence[ImageItem], test_fraction: float = 0.2) -> SbirSplit:
  """Category-level on PACS / TU-Berlin alone (7 classes; PACS photos and TU-Berlin
  sketches are not paired): per class, the photos and the sketches are each ranked by
  SHA-1 of their last three path parts ("photo/dog/056_0001.jpg") and the first
  round(n * test_fraction) of each go to test. Training pairs are by class."""
  _check_fraction(test_fraction)
  test_ids = set()
  for group in _by_class(pacs).values():
    for modality in ("photo", "sketch"):
      test_ids |= _first_share((_path_id(i) for i in group if i.modality == modality),
                               test_fraction)
  train = [item for item in pacs if _path_id(item) not in test_ids]
  test = [item for item in pacs if _path_id(item) in test_ids]
  return SbirSplit("pacs", _side(train), _side(test), "class", "class")


def _path_id(item: ImageItem) -> str:
  """The last three parts of the path ("simplified/dog.ndjson#3",
  "extra/simplified/dog.ndjson#3" -> "quickdraw/simplified/dog.ndjson#3",
  "extra/simplified/dog.ndjson#3"; ".../tuberlin_pacs/photo/dog/056_0002.jpg" ->
  "photo/dog/056_0002.jpg"): unique, independent of the data's root."""
  return "/".join(pathlib.PurePath(item.path).parts[-3:])


SPLIT_NAMES: tuple[str, ...] = (
    "category", "zeroshot_sketchy25", "zeroshot_sketchy21", "finegrained_sketchy25",
    "finegrained_sketchy21", "cross_pacs", "cross_pacs_unseen", "quickdraw_photo", "pacs")


@dataclasses.dataclass(frozen=True)
class DataDirs:
  """Where the datasets are; None where a split does not need one.

  Attributes:
    sketchy: `<sketchy>/{photo,sketch}/<class>/` (Sketchy's layout).
    pacs: `<pacs>/{photo,sketch}/<class>/` (PACS / TU-Berlin).
    quickdraw: folders of simplified `<category>.ndjson` files, all read
      (e.g. `quickdraw/simplified` and `quickdraw/extra/simplified`).
  """

  sketchy: pathlib.Path | None = None
  pacs: pathlib.Path | None = None
  quickdraw: tuple[pathlib.Path, ...] = ()

  @classmethod
  def under(cls, root: str | os.PathLike) -> DataDirs:
    """The layout of the project's `../shared/data`: `root/sketchy`,
    `root/tuberlin_pacs`, `root/quickdraw/simplified` and
    `root/quickdraw/extra/simplified`."""
    root = pathlib.Path(root)
    return cls(root / "sketchy", root / "tuberlin_pacs",
               (root / "quickdraw" / "simplified", root / "quickdraw" / "extra" / "simplified"))


def _need(folder: pathlib.Path | None, what: str, name: str) -> pathlib.Path:
  if folder is None:
    raise ValueError(f"the {name} split needs the {what} folder (DataDirs.{what})")
  return folder


def make_split(name: str, dirs: DataDirs, *, test_fraction: float = 0.2,
               max_drawings_per_class: int | None = 100,
               policy: BadInputPolicy | None = None) -> SbirSplit:
  """The split called `name` (one of `SPLIT_NAMES`) of the data in `dirs`.

  Args:
    test_fraction: for "category", "quickdraw_photo" and "pacs".
    max_drawings_per_class: for "quickdraw_photo".
    policy: bad input (unreadable folders, missing fine-grained photos):
      raise (default) or skip and count.
  """
  if name not in SPLIT_NAMES:
    raise ValueError(f"unknown split {name!r}; splits: {', '.join(SPLIT_NAMES)}")
  policy = policy or BadInputPolicy()
  if name == "pacs":
    pacs = read_class_folders(_need(dirs.pacs, "pacs", name), policy=policy)
    return pacs_split(pacs.photos + pacs.sketches, test_fraction)
  sketchy_dir = _need(dirs.sketchy, "sketchy", name)
  sketchy = read_sketchy(sketchy_dir, require_photo=name.startswith("finegrained"),
                         policy=policy)
  items = sketchy.photos + sketchy.sketches
  if name == "category":
    return category_split(items, test_fraction)
  unseen = SKETCHY25_UNSEEN if name.endswith("sketchy25") else SKETCHY21_UNSEEN
  if name.startswith("zeroshot"):
    return zeroshot_split(items, unseen, name)
  if name.startswith("finegrained"):
    return finegrained_split(items, unseen, name, policy)
  if name.startswith("cross_pacs"):
    pacs = read_class_folders(_need(dirs.pacs, "pacs", name), policy=policy)
    return cross_dataset_split(items, pacs.photos + pacs.sketches,
                               exclude_shared_classes=name == "cross_pacs_unseen")
  if not dirs.quickdraw:
    raise ValueError(f"the {name} split needs the quickdraw folders (DataDirs.quickdraw)")
  drawings = []
  for folder in dirs.quickdraw:
    present = sorted(c for c in QUICKDRAW_TO_SKETCHY if (folder / f"{c}.ndjson").is_file())
    if present:
      drawings += read_quickdraw_drawings(folder, present, policy=policy)
  return quickdraw_photo_split(drawings, items, test_fraction, max_drawings_per_class)
