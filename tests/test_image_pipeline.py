"""SbirImages TFDS builder and the image-pair grain pipelines, on a few real Sketchy/QuickDraw classes."""

import pathlib
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from sketchjax.data import image_pipeline, sbir_splits, tfds_sbir
from sketchjax.data.formats.image_folders import load_image
from sketchjax.data.image_preprocess import Preprocess

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ("airplane", "cat", "zebra")  # Sketchy classes that are also QuickDraw ones
SIZE = 16  # pixels: tests compare pipelines, not models


def _preprocess(image: np.ndarray, modality: str) -> np.ndarray:
  """uint8 [H, W, 3] -> float32 [SIZE, SIZE, 3] in [-1, 1]; sketches flipped so
  the modality visibly matters."""
  pixels = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR), np.float32)
  pixels = pixels / 127.5 - 1.0
  return pixels[:, ::-1] if modality == "sketch" else pixels


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory) -> pathlib.Path:
  """A data folder in ../shared/data's layout holding only `CLASSES` (links)."""
  if not (SHARED_DATA / "sketchy").exists():
    pytest.skip(f"real data not found at {SHARED_DATA}: these tests need the project's "
                "../shared folder next to the checkout")
  root = tmp_path_factory.mktemp("manual")
  for name in CLASSES:
    for modality in ("photo", "sketch"):
      (root / "sketchy" / modality).mkdir(parents=True, exist_ok=True)
      (root / "sketchy" / modality / name).symlink_to(SHARED_DATA / "sketchy" / modality / name)
    for folder in ("simplified", "extra/simplified"):
      (root / "quickdraw" / folder).mkdir(parents=True, exist_ok=True)
      (root / "quickdraw" / folder / f"{name}.ndjson").symlink_to(
          SHARED_DATA / "quickdraw" / folder / f"{name}.ndjson")
  return root


@pytest.fixture(scope="module")
def split(manual_dir) -> sbir_splits.SbirSplit:
  return sbir_splits.make_split("category", sbir_splits.DataDirs.under(manual_dir))


@pytest.fixture(scope="module")
def builder(manual_dir, tmp_path_factory) -> tfds_sbir.SbirImages:
  tfds.disable_progress_bar()
  return tfds_sbir.build(tmp_path_factory.mktemp("tfds"), manual_dir, "category")


def _items(side: sbir_splits.SplitSide, modality: str) -> image_pipeline.ItemSource:
  return image_pipeline.ItemSource(side.items(modality), side.classes)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_tfds_build_and_read_back(builder, split, manual_dir):
  loaded = [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]
  assert not loaded, loaded
  counts = {name: builder.info.splits[name].num_examples for name in builder.info.splits}
  assert counts == split.counts() == {"train_photo": 60, "train_sketch": 59,
                                      "test_photo": 15, "test_sketch": 16}
  assert builder.info.metadata["classes"] == {"train": list(CLASSES), "test": list(CLASSES)}
  # Through the public entry point, in the split's order, with the file's bytes.
  records = tfds.data_source("sbir_images/category", data_dir=builder.data_dir_root,
                             split="test_sketch")
  for i, item in enumerate(split.test.sketches):
    record = records[i]
    assert record["file_name"].decode() == str(pathlib.Path(item.path).relative_to(manual_dir))
    assert record["image"] == pathlib.Path(item.path).read_bytes()
    assert record["class_name"].decode() == item.label
    assert record["label"] == CLASSES.index(item.label)
    assert (record["modality"], record["instance"]) == (b"sketch", item.instance.encode())
  assert len(tfds_sbir.load_split(builder.data_dir, "train_photo[:7]")) == 7


def test_quickdraw_renders_are_stored_as_png(manual_dir, tmp_path):
  tfds.disable_progress_bar()
  builder = tfds_sbir.build(tmp_path, manual_dir, "quickdraw_photo", max_drawings_per_class=4)
  split = sbir_splits.make_split("quickdraw_photo", sbir_splits.DataDirs.under(manual_dir),
                                 max_drawings_per_class=4)
  assert builder.info.splits["test_sketch"].num_examples == len(split.test.sketches) == 3
  records = tfds_sbir.load_split(builder, "train_sketch")
  assert len(records) == len(split.train.sketches) == 9  # 4 a class, round(0.8) = 1 of them test
  for i in range(len(records)):
    record = records[i]
    assert record["image"].startswith(b"\x89PNG")
    assert ".ndjson#" in record["file_name"].decode()
    np.testing.assert_array_equal(image_pipeline.decode_image(record["image"], "x"),
                                  load_image(split.train.sketches[i]))
  assert builder.info.metadata["pairing"] == "class"


def test_tfds_and_in_memory_sources_give_the_same_batches(builder, split):
  photos, sketches = _items(split.train, "photo"), _items(split.train, "sketch")
  tfds_photos = image_pipeline.as_image_source(tfds_sbir.load_split(builder, "train_photo"))
  tfds_sketches = tfds_sbir.load_split(builder, "train_sketch")
  kwargs = dict(global_batch_size=8, seed=3, preprocess=_preprocess)
  a = _take(image_pipeline.pair_train_iterator(photos, sketches, **kwargs), 3)
  b = _take(image_pipeline.pair_train_iterator(tfds_photos, tfds_sketches, **kwargs), 3)
  _assert_batches_equal(a, b)
  assert a[0]["sketch"].shape == a[0]["photo"].shape == (8, SIZE, SIZE, 3)
  assert a[0]["sketch"].dtype == np.float32 and a[0]["label"].dtype == np.int32
  for modality in ("photo", "sketch"):
    zse = Preprocess("zse", 24)  # the official sketch crop and photo resize
    a = list(image_pipeline.image_eval_batches(_items(split.test, modality), global_batch_size=4,
                                               preprocess=zse))
    b = list(image_pipeline.image_eval_batches(tfds_sbir.load_split(builder, f"test_{modality}"),
                                               global_batch_size=4, preprocess=zse))
    _assert_batches_equal(a, b)
    assert a[0]["image"].shape == (4, 24, 24, 3)


def _which(pixels: np.ndarray, table: np.ndarray) -> int:
  """The one row of `table` [n, S, S, 3] equal to `pixels`."""
  rows = np.flatnonzero((table == pixels).all(axis=(1, 2, 3)))
  assert len(rows) == 1
  return int(rows[0])


def test_instance_pairs_seeded_order_and_epochs(split):
  photos, sketches = _items(split.train, "photo"), _items(split.train, "sketch")
  all_photos = np.stack([_preprocess(photos.image(i), "photo") for i in range(len(photos))])
  all_sketches = np.stack([_preprocess(sketches.image(i), "sketch") for i in range(len(sketches))])
  kwargs = dict(global_batch_size=8, preprocess=_preprocess, cache=True)
  # 59 sketches: 7 whole batches an epoch, then the next epoch in a new order.
  batches = _take(image_pipeline.pair_train_iterator(photos, sketches, seed=0, **kwargs), 14)
  seen = []
  for batch in batches:
    for sketch_pixels, photo_pixels, label in zip(batch["sketch"], batch["photo"], batch["label"]):
      s, p = _which(sketch_pixels, all_sketches), _which(photo_pixels, all_photos)
      assert sketches.instances[s] == photos.instances[p]
      assert label == sketches.labels[s] == photos.labels[p]
      seen.append(s)
  first_epoch = seen[:59]
  assert sorted(first_epoch) == list(range(59))  # each sketch once an epoch
  assert seen[59:] != first_epoch[:len(seen) - 59]  # a new order in epoch 2
  again = _take(image_pipeline.pair_train_iterator(photos, sketches, seed=0, **kwargs), 2)
  _assert_batches_equal(again, batches[:2])
  other = next(image_pipeline.pair_train_iterator(photos, sketches, seed=1, **kwargs))
  assert not np.array_equal(other["sketch"], batches[0]["sketch"])


@pytest.mark.parametrize("pairing", ["instance", "class"])
def test_restored_iterator_continues_exactly(split, pairing):
  photos, sketches = _items(split.train, "photo"), _items(split.train, "sketch")
  kwargs = dict(global_batch_size=8, seed=5, preprocess=_preprocess, pairing=pairing, cache=True)
  iterator = image_pipeline.pair_train_iterator(photos, sketches, **kwargs)
  _take(iterator, 5)
  state = iterator.get_state()
  rest = _take(iterator, 4)  # crosses the epoch boundary at 7 batches
  resumed = image_pipeline.pair_train_iterator(photos, sketches, **kwargs)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 4), rest)


def test_class_pairs_draw_photos_of_the_sketch_class(split):
  photos, sketches = _items(split.train, "photo"), _items(split.train, "sketch")
  all_photos = np.stack([_preprocess(photos.image(i), "photo") for i in range(len(photos))])
  iterator = image_pipeline.pair_train_iterator(
      photos, sketches, global_batch_size=8, seed=0, preprocess=_preprocess, pairing="class",
      cache=True)
  drawn = []
  for batch in _take(iterator, 7):
    for photo_pixels, label in zip(batch["photo"], batch["label"]):
      p = _which(photo_pixels, all_photos)
      assert photos.labels[p] == label
      drawn.append(p)
  # Photos other than the sketched ones are drawn: 59 draws over 60 photos.
  assert len(set(drawn)) > 25
  assert not set(drawn) <= {i for i, inst in enumerate(photos.instances)
                            if inst in set(sketches.instances)}


@pytest.mark.parametrize("pairing", ["instance", "class"])
def test_two_processes_share_each_global_batch(split, monkeypatch, pairing):
  photos, sketches = _items(split.train, "photo"), _items(split.train, "sketch")
  kwargs = dict(global_batch_size=8, seed=2, preprocess=_preprocess, pairing=pairing, cache=True)
  whole = _take(image_pipeline.pair_train_iterator(photos, sketches, **kwargs), 9)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  shares = []
  for index in (0, 1):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    shares.append(_take(image_pipeline.pair_train_iterator(photos, sketches, **kwargs), 9))
  for batch, first, second in zip(whole, *shares):
    for key in batch:
      assert first[key].shape[0] == second[key].shape[0] == 4
      np.testing.assert_array_equal(first[key], batch[key][0::2])
      np.testing.assert_array_equal(second[key], batch[key][1::2])


def test_eval_covers_every_item_once(split, monkeypatch):
  source = _items(split.test, "sketch")  # 16 sketches
  batches = list(image_pipeline.image_eval_batches(source, global_batch_size=6,
                                                   preprocess=_preprocess))
  assert len(batches) == 3
  index = np.concatenate([b["index"] for b in batches])
  np.testing.assert_array_equal(index, list(range(16)) + [-1, -1])
  np.testing.assert_array_equal(np.concatenate([b["weight"] for b in batches]),
                                [1.0] * 16 + [0.0] * 2)
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:16], source.labels)
  images = np.concatenate([b["image"] for b in batches])
  for i in (0, 7, 15):
    np.testing.assert_array_equal(images[i], _preprocess(source.image(i), "sketch"))
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  per_process = []
  for process in (0, 1):
    monkeypatch.setattr(jax, "process_index", lambda process=process: process)
    per_process.append(list(image_pipeline.image_eval_batches(
        source, global_batch_size=6, preprocess=_preprocess)))
  assert [len(p) for p in per_process] == [3, 3]
  shared = np.concatenate([b["index"] for p in per_process for b in p])
  assert sorted(i for i in shared.tolist() if i >= 0) == list(range(16))


def test_cache_decodes_each_image_once(split):
  calls = []

  class Counting(image_pipeline.ItemSource):
    def image(self, index):
      calls.append(index)
      return super().image(index)

  source = Counting(split.test.photos, split.test.classes)
  kwargs = dict(global_batch_size=5, preprocess=_preprocess)
  plain = list(image_pipeline.image_eval_batches(source, **kwargs))
  assert len(calls) == 15
  cached = image_pipeline.image_eval_batches(source, cache=True, **kwargs)
  calls.clear()
  first, second = list(cached), list(cached)
  assert sorted(calls) == list(range(15))  # the second pass read nothing
  _assert_batches_equal(first, plain)
  _assert_batches_equal(second, plain)


def test_bad_pairings_are_named(split):
  photos = image_pipeline.ItemSource(split.train.photos[1:], split.train.classes)
  sketches = _items(split.train, "sketch")
  lost = split.train.photos[0]
  orphans = [s.path for s in split.train.sketches if s.instance == lost.instance]
  with pytest.raises(ValueError, match=f"{orphans[0]}: no photo '{lost.instance}'"):
    image_pipeline.pair_train_iterator(photos, sketches, global_batch_size=4, seed=0,
                                       preprocess=_preprocess)
  only_cats = image_pipeline.ItemSource(
      [p for p in split.train.photos if p.label == "cat"], split.train.classes)
  with pytest.raises(ValueError, match=r"labels \[0, 2\] have sketches but no photo"):
    image_pipeline.pair_train_iterator(only_cats, sketches, global_batch_size=4, seed=0,
                                       preprocess=_preprocess, pairing="class")
  with pytest.raises(ValueError, match="not in the class list"):
    image_pipeline.ItemSource(split.train.photos, ("cat",))
  with pytest.raises(ValueError, match="does not split over"):
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(jax, "process_count", lambda: 3)
      image_pipeline.image_eval_batches(photos, global_batch_size=4, preprocess=_preprocess)
  with pytest.raises(ValueError, match="x.png: unreadable image"):
    image_pipeline.decode_image(b"\x89PNG\r\n\x1a\n broken", "x.png")
