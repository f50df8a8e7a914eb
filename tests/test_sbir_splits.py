"""Retrieval splits on the real Sketchy, PACS and QuickDraw folders: counts, disjointness, determinism."""

import dataclasses
import pathlib
import shutil

import pytest

from sketchjax.data import sbir_splits
from sketchjax.data.categories import QUICKDRAW_345
from sketchjax.data.formats.image_folders import read_sketchy
from sketchjax.data.image_items import ImageItem
from sketchjax.data.records import BadInputPolicy, SketchFormatError

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"

# The table of the sbir_splits docstring:
# (train photos, train sketches, test photos, test sketches, train classes, test classes).
EXPECTED = {
    "category": (2500, 2423, 625, 702, 125, 125),
    "zeroshot_sketchy25": (2500, 2500, 625, 625, 100, 25),
    "zeroshot_sketchy21": (2600, 2600, 525, 525, 104, 21),
    "finegrained_sketchy25": (465, 2500, 113, 625, 100, 25),
    "finegrained_sketchy21": (482, 2600, 96, 525, 104, 21),
    "cross_pacs": (3125, 3125, 700, 640, 125, 7),
    "cross_pacs_unseen": (3000, 3000, 700, 640, 120, 7),
    "quickdraw_photo": (1900, 3751, 475, 938, 95, 95),
    "pacs": (560, 512, 140, 128, 7, 7),
}


@pytest.fixture(scope="module")
def data_dirs() -> sbir_splits.DataDirs:
  if not (SHARED_DATA / "sketchy").exists():
    pytest.skip(f"real data not found at {SHARED_DATA}: these tests need the project's "
                "../shared folder next to the checkout")
  return sbir_splits.DataDirs.under(SHARED_DATA)


@pytest.fixture(scope="module")
def splits(data_dirs) -> dict[str, sbir_splits.SbirSplit]:
  return {name: sbir_splits.make_split(name, data_dirs) for name in sbir_splits.SPLIT_NAMES}


def _ids(items):
  return {(item.label, item.instance) for item in items}


def test_counts_on_the_real_data(splits):
  for name, split in splits.items():
    counts = split.counts()
    got = (counts["train_photo"], counts["train_sketch"], counts["test_photo"],
           counts["test_sketch"], len(split.train.classes), len(split.test.classes))
    assert got == EXPECTED[name], name
    assert split.name == name


def test_unseen_class_names_are_sketchy_folders(data_dirs):
  folders = {p.name for p in (data_dirs.sketchy / "sketch").iterdir()}
  assert len(sbir_splits.SKETCHY25_UNSEEN) == len(set(sbir_splits.SKETCHY25_UNSEEN)) == 25
  assert len(sbir_splits.SKETCHY21_UNSEEN) == len(set(sbir_splits.SKETCHY21_UNSEEN)) == 21
  assert set(sbir_splits.SKETCHY25_UNSEEN) <= folders
  assert set(sbir_splits.SKETCHY21_UNSEEN) <= folders
  assert set(sbir_splits.QUICKDRAW_TO_SKETCHY.values()) <= folders
  assert set(sbir_splits.QUICKDRAW_TO_SKETCHY) <= set(QUICKDRAW_345)
  assert len(set(sbir_splits.QUICKDRAW_TO_SKETCHY.values())) == len(
      sbir_splits.QUICKDRAW_TO_SKETCHY) == 95


def test_category_split_keeps_each_instance_on_one_side(splits):
  split = splits["category"]
  train = split.train.photos + split.train.sketches
  test = split.test.photos + split.test.sketches
  assert not _ids(train) & _ids(test)
  assert split.train.classes == split.test.classes
  # Every class keeps sketch queries and their photos on both sides.
  for side in (split.train, split.test):
    assert {s.label for s in side.sketches} == set(side.classes)
    assert _ids(side.sketches) <= _ids(side.photos)
  # Per class: 1 sketched photo and 4 others are test (0.2 of 3-5 and 20-22).
  for label in split.test.classes:
    photos = [p for p in split.test.photos if p.label == label]
    drawn = {s.instance for s in split.test.sketches if s.label == label}
    assert len(photos) == 5 and len(drawn) == 1


def test_zero_shot_and_fine_grained_keep_unseen_classes_out_of_training(splits):
  for name, unseen in (("25", sbir_splits.SKETCHY25_UNSEEN), ("21", sbir_splits.SKETCHY21_UNSEEN)):
    for kind in ("zeroshot", "finegrained"):
      split = splits[f"{kind}_sketchy{name}"]
      assert split.test.classes == tuple(sorted(unseen))
      assert not set(split.train.classes) & set(unseen)
      for modality in ("photo", "sketch"):
        assert {i.label for i in split.train.items(modality)} == set(split.train.classes)
  fine = splits["finegrained_sketchy25"]
  assert fine.relevance == "instance" and fine.pairing == "instance"
  for side in (fine.train, fine.test):  # each sketch's own photo, and only sketched photos
    assert _ids(side.sketches) == _ids(side.photos)
    assert len(_ids(side.photos)) == len(side.photos)
  assert splits["zeroshot_sketchy25"].relevance == "class"


def test_pacs_split_is_pacs_alone_and_disjoint(splits, data_dirs):
  split = splits["pacs"]
  train = split.train.photos + split.train.sketches
  test = split.test.photos + split.test.sketches
  assert all("tuberlin_pacs" in i.path for i in train + test)
  assert not {i.path for i in train} & {i.path for i in test}
  folders = tuple(sorted(p.name for p in (data_dirs.pacs / "photo").iterdir()))
  assert split.train.classes == split.test.classes == folders
  # a fifth of each class's 100 photos is test
  assert all(sum(i.label == c for i in split.test.photos) == 20 for c in folders)
  alone = sbir_splits.make_split("pacs", sbir_splits.DataDirs(pacs=data_dirs.pacs))
  assert alone.counts() == split.counts() and alone.test.photos == split.test.photos


def test_cross_dataset_tests_on_pacs(splits):
  split = splits["cross_pacs"]
  assert split.test.classes == ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
  assert all("tuberlin_pacs" in i.path for i in split.test.photos + split.test.sketches)
  assert all("sketchy" in i.path for i in split.train.photos + split.train.sketches)
  unseen = splits["cross_pacs_unseen"]
  assert not set(unseen.train.classes) & set(unseen.test.classes)
  assert set(split.train.classes) - set(unseen.train.classes) == set(sbir_splits.PACS_IN_SKETCHY)


def test_quickdraw_photo_queries_are_drawings_and_gallery_sketchy_photos(splits):
  split = splits["quickdraw_photo"]
  assert split.pairing == "class"
  for side in (split.train, split.test):
    assert all(".ndjson#" in s.path for s in side.sketches)
    assert all(p.path.endswith(".jpg") and "sketchy" in p.path for p in side.photos)
    assert {s.label for s in side.sketches} == {p.label for p in side.photos} == set(side.classes)
  assert not {s.path for s in split.train.sketches} & {s.path for s in split.test.sketches}
  assert not _ids(split.train.photos) & _ids(split.test.photos)
  # QuickDraw names became Sketchy names; drawings come from both folders.
  assert "alarm_clock" in split.test.classes and "car_(sedan)" in split.test.classes
  assert any("/extra/" in s.path for s in split.train.sketches)
  per_class = {}
  for s in split.train.sketches + split.test.sketches:
    per_class[s.label] = per_class.get(s.label, 0) + 1
  assert max(per_class.values()) == 100 and per_class["alarm_clock"] == 35  # 20 + 15 extra


def test_splits_are_deterministic_and_independent_of_item_order(data_dirs, splits):
  again = sbir_splits.make_split("category", data_dirs)
  assert again == splits["category"]
  sketchy = read_sketchy(data_dirs.sketchy)
  shuffled = list(reversed(sketchy.sketches)) + list(reversed(sketchy.photos))
  assert sbir_splits.category_split(shuffled) == splits["category"]
  # A different fraction moves photos; the rule is by id, so a larger fraction
  # only adds to the test set.
  bigger = sbir_splits.category_split(shuffled, test_fraction=0.4)
  assert _ids(splits["category"].test.photos) < _ids(bigger.test.photos)


def test_split_of_a_copied_folder_is_the_same(data_dirs, tmp_path):
  """Ids, not absolute paths, decide: a copy elsewhere splits the same way."""
  copy = tmp_path / "sketchy"
  for modality in ("photo", "sketch"):
    for name in ("airplane", "zebra"):
      shutil.copytree(data_dirs.sketchy / modality / name, copy / modality / name)
  items = [*read_sketchy(copy).photos, *read_sketchy(copy).sketches]
  original = read_sketchy(data_dirs.sketchy)
  subset = [i for i in original.photos + original.sketches if i.label in ("airplane", "zebra")]
  a, b = sbir_splits.category_split(items), sbir_splits.category_split(subset)
  assert _ids(a.test.photos) == _ids(b.test.photos) and _ids(a.test.sketches) == _ids(b.test.sketches)


def test_bad_input_is_named(data_dirs):
  sketchy = read_sketchy(data_dirs.sketchy)
  items = sketchy.photos + sketchy.sketches
  orphan = dataclasses.replace(sketchy.sketches[0], path="/x/airplane/n0_1-1.png", instance="n0_1")
  with pytest.raises(SketchFormatError, match=r"/x/airplane/n0_1-1.png: missing photo"):
    sbir_splits.finegrained_split(items + [orphan])
  policy = BadInputPolicy("skip")
  split = sbir_splits.finegrained_split(items + [orphan], policy=policy)
  assert policy.counts == {"missing photo": 1}
  assert orphan not in split.train.sketches
  nameless = ImageItem("/x/cup/a.png", "cup", "sketch")
  with pytest.raises(ValueError, match=r"/x/cup/a.png: the category split needs"):
    sbir_splits.category_split(items + [nameless])
  without_cup = [i for i in items if i.label != "cup"]
  with pytest.raises(ValueError, match=r"unseen classes \['cup'\] have no images"):
    sbir_splits.zeroshot_split(without_cup)
  with pytest.raises(ValueError, match="unknown split 'zeroshot'"):
    sbir_splits.make_split("zeroshot", data_dirs)
  with pytest.raises(ValueError, match="needs the pacs folder"):
    sbir_splits.make_split("cross_pacs", sbir_splits.DataDirs(sketchy=data_dirs.sketchy))
