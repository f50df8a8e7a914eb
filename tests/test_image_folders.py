"""Image readers and `load_image`: the real folders, the two official layouts, bad input."""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np
from PIL import Image
import pytest

from sketchjax.data.formats import image_folders as folders
from sketchjax.data.formats.image_folders import ImageFormatError, load_image
from sketchjax.data.image_items import ImageItem
from sketchjax.data.records import BadInputPolicy, SketchFormatError



def _write_image(path: pathlib.Path, value: int = 0, size: int = 8) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
  return path


# The real folders.

def test_sketchy_real_pairs(sketchy_dir):
  photos, sketches = folders.read_sketchy(sketchy_dir, require_photo=True)
  assert (len(photos), len(sketches)) == (125 * 25, 125 * 25)
  for items in (photos, sketches):
    assert set(collections.Counter(i.label for i in items).values()) == {25}
    assert items == sorted(items)
  assert {p.modality for p in photos} == {"photo"} and {s.modality for s in sketches} == {"sketch"}
  photo_of = {(p.label, p.instance): p for p in photos}
  assert all((s.label, s.instance) in photo_of for s in sketches)
  first = sketches[0]
  assert first == ImageItem(str(sketchy_dir / "sketch/airplane/n02691156_10151-1.png"),
                            "airplane", "sketch", "n02691156_10151")
  assert photo_of[("airplane", "n02691156_10151")].path.endswith("n02691156_10151.jpg")
  sketch, photo = load_image(first), load_image(photo_of[("airplane", "n02691156_10151")])
  assert sketch.shape == photo.shape == (128, 128, 3) and sketch.dtype == photo.dtype == np.uint8
  # Black ink on white: the corners are white and some pixels are dark.
  assert (sketch[0, 0] == 255).all() and sketch.min() < 50
  assert photo.std() > 10


def test_pacs_real_counts(pacs_dir):
  photos, sketches = folders.read_class_folders(pacs_dir)
  assert (len(photos), len(sketches)) == (700, 640)
  counts = collections.Counter(s.label for s in sketches)
  assert counts == {"dog": 80, "elephant": 80, "giraffe": 80, "guitar": 80, "horse": 80,
                    "house": 80, "person": 160}
  assert set(collections.Counter(p.label for p in photos).values()) == {100}
  assert {i.instance for i in photos + sketches} == {""}
  assert load_image(sketches[0]).shape == load_image(photos[0]).shape == (227, 227, 3)


def test_quickdraw_bitmaps_real(quickdraw_dir):
  items = folders.read_quickdraw_bitmaps(quickdraw_dir / "bitmap")
  assert len(items) == 30909 and len({i.label for i in items}) == 27
  assert items[0].path.endswith("airplane.npy#0") and items[0].modality == "sketch"
  labels = [i.label for i in items]
  assert labels.index("alarm clock") < labels.index("apple")  # class-id order
  few = folders.read_quickdraw_bitmaps(quickdraw_dir / "bitmap", ["cat", "alarm clock"], 3)
  assert [i.path.rsplit("/", 1)[1] for i in few] == [
      "alarm clock.npy#0", "alarm clock.npy#1", "alarm clock.npy#2",
      "cat.npy#0", "cat.npy#1", "cat.npy#2"]
  one_file = folders.read_quickdraw_bitmaps(quickdraw_dir / "bitmap/cat.npy", max_per_class=2)
  assert [i.label for i in one_file] == ["cat", "cat"]
  row = np.load(quickdraw_dir / "bitmap/cat.npy")[2].reshape(28, 28)
  image = load_image(few[-1])
  assert image.shape == (28, 28, 3)
  np.testing.assert_array_equal(image[..., 1], 255 - row)  # black ink on white
  with pytest.raises(ValueError, match="categories not in .*'zebra'"):
    folders.read_quickdraw_bitmaps(quickdraw_dir / "bitmap", ["zebra"])


def test_quickdraw_drawings_render_as_the_official_bitmaps(quickdraw_dir):
  items = folders.read_quickdraw_drawings(quickdraw_dir / "simplified", ["cat", "bicycle"], 4)
  assert [i.path.rsplit("/", 1)[1] for i in items] == [
      f"{c}.ndjson#{n}" for c in ("bicycle", "cat") for n in (1, 2, 3, 4)]
  # At 28 pixels the rendering is close to the official bitmap (row = line - 1),
  # inverted: PIL's lines are not cairo's, about 6/255 a pixel apart on average.
  official = np.load(quickdraw_dir / "bitmap/cat.npy")[:4].reshape(4, 28, 28)
  for item, bitmap in zip(items[4:], official):
    image = load_image(item, vector_size=28)
    assert np.abs(image[..., 0].astype(int) - (255 - bitmap.astype(int))).mean() < 10
  big = load_image(items[0], vector_size=96)
  assert big.shape == (96, 96, 3) and (big[0, 0] == 255).all() and big.min() < 30
  assert (big[..., 0] == big[..., 2]).all()


# The two official layouts, written here.

def test_imagefolder_split_layout(tmp_path):
  for split in ("train", "test"):
    for modality in ("photo", "sketch"):
      for cls in ("cat", "dog"):
        for k in range(2):
          _write_image(tmp_path / split / modality / cls / f"{k}.{'jpg' if modality == 'photo' else 'png'}")
  (tmp_path / "train/photo/cat/notes.txt").write_text("not an image")
  _write_image(tmp_path / "train/photo/cat/nested/deep.JPEG")  # ImageFolder reads recursively
  photos, sketches = folders.read_imagefolder_split(tmp_path, "train")
  assert [pathlib.Path(p.path).relative_to(tmp_path).as_posix() for p in photos] == [
      "train/photo/cat/0.jpg", "train/photo/cat/1.jpg", "train/photo/cat/nested/deep.JPEG",
      "train/photo/dog/0.jpg", "train/photo/dog/1.jpg"]
  assert [s.label for s in sketches] == ["cat", "cat", "dog", "dog"]
  assert len(folders.read_imagefolder_split(tmp_path, "test").photos) == 4
  with pytest.raises(FileNotFoundError, match="valid/photo.*DF-SBIR's ImageFolder layout"):
    folders.read_imagefolder_split(tmp_path, "valid")


def _sake(tmp_path: pathlib.Path, lines: list[str]) -> tuple[pathlib.Path, pathlib.Path]:
  classes = tmp_path / "cname_cid_zero.txt"
  classes.write_text("teddy_bear 0\nwine bottle 1\n\n")
  listing = tmp_path / "sketch_zero.txt"
  listing.write_text("\n".join(lines) + "\n")
  return listing, classes


def test_sake_file_list(tmp_path):
  root = tmp_path / "Sketchy"
  _write_image(root / "tx/teddy_bear/a-1.png")
  _write_image(root / "tx/wine bottle/b 2-1.png")
  listing, classes = _sake(tmp_path, ["tx/wine bottle/b 2-1.png 1", "", "tx/teddy_bear/a-1.png\t0"])
  assert folders.read_class_list(classes) == {0: "teddy_bear", 1: "wine bottle"}
  items = folders.read_file_list(listing, root, classes, "sketch")
  assert items == [ImageItem(str(root / "tx/wine bottle/b 2-1.png"), "wine bottle", "sketch"),
                   ImageItem(str(root / "tx/teddy_bear/a-1.png"), "teddy_bear", "sketch")]
  with pytest.raises(ValueError, match="modality must be one of"):
    folders.read_file_list(listing, root, classes, "drawing")


# Bad input.

def test_truncated_and_corrupt_images_raise(tmp_path, sketchy_dir):
  data = (sketchy_dir / "photo/airplane/n02691156_10151.jpg").read_bytes()
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(ImageFormatError, match=r"truncated\.jpg: unreadable image: .*truncated"):
    load_image(ImageItem(str(truncated), "airplane", "photo"))
  cut_end = tmp_path / "cut_end.jpg"
  cut_end.write_bytes(data[:-2])  # only the end-of-image marker and a byte missing
  with pytest.raises(ImageFormatError, match="unreadable image"):
    load_image(ImageItem(str(cut_end), "airplane", "photo"))
  text = tmp_path / "text.png"
  text.write_text("hello")
  with pytest.raises(ImageFormatError, match=r"text\.png: unreadable image"):
    load_image(ImageItem(str(text), "x", "sketch"))
  with pytest.raises(ImageFormatError, match="gone.png: missing file"):
    load_image(ImageItem(str(tmp_path / "gone.png"), "x", "sketch"))


def test_verify_images_skips_and_counts(tmp_path, sketchy_dir):
  data = (sketchy_dir / "photo/airplane/n02691156_10151.jpg").read_bytes()
  (tmp_path / "photo/airplane").mkdir(parents=True)
  (tmp_path / "photo/airplane/good.jpg").write_bytes(data)
  (tmp_path / "photo/airplane/half.jpg").write_bytes(data[:len(data) // 2])
  _write_image(tmp_path / "sketch/airplane/s.png")
  photos, _ = folders.read_class_folders(tmp_path)  # listing does not decode
  assert len(photos) == 2
  with pytest.raises(ImageFormatError, match=r"half\.jpg: unreadable image"):
    folders.verify_images(photos)
  policy = BadInputPolicy("skip")
  assert folders.verify_images(photos, policy=policy) == photos[:1]
  assert policy.counts == {"unreadable image": 1}


def test_grey_and_transparent_images_become_rgb_on_white(tmp_path):
  grey = tmp_path / "grey.png"
  Image.fromarray(np.full((4, 5), 7, np.uint8), "L").save(grey)
  np.testing.assert_array_equal(load_image(ImageItem(str(grey), "x", "sketch")),
                                np.full((4, 5, 3), 7, np.uint8))
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[0, 0] = (0, 0, 0, 255)  # one opaque black pixel, the rest transparent black
  path = tmp_path / "alpha.png"
  Image.fromarray(rgba, "RGBA").save(path)
  image = load_image(ImageItem(str(path), "x", "sketch"))
  assert image[0, 0].tolist() == [0, 0, 0] and image[1, 1].tolist() == [255, 255, 255]


def test_empty_class_folder(tmp_path):
  for modality in ("photo", "sketch"):
    _write_image(tmp_path / modality / "cat/1.png")
  (tmp_path / "sketch/dog").mkdir()
  (tmp_path / "sketch/dog/.DS_Store").write_text("")
  with pytest.raises(ImageFormatError, match=r"sketch/dog: empty class folder"):
    folders.read_class_folders(tmp_path)
  policy = BadInputPolicy("skip")
  photos, sketches = folders.read_class_folders(tmp_path, policy=policy)
  assert len(photos) == len(sketches) == 1 and policy.counts == {"empty class folder": 1}
  with pytest.raises(FileNotFoundError, match="no photo folder at .*class-folder layout"):
    folders.read_class_folders(tmp_path / "sketch")


def test_file_list_bad_lines(tmp_path):
  root = tmp_path / "images"
  _write_image(root / "a.png")
  listing, classes = _sake(tmp_path, ["a.png 0", "missing.png 1", "a.png 7", "a.png"])
  with pytest.raises(ImageFormatError, match=r"sketch_zero\.txt:2: missing file: .*missing\.png"):
    folders.read_file_list(listing, root, classes, "sketch")
  policy = BadInputPolicy("skip")
  items = folders.read_file_list(listing, root, classes, "sketch", policy=policy)
  assert [i.label for i in items] == ["teddy_bear"]
  assert policy.counts == {"missing file": 1, "unknown label": 1, "malformed line": 1}
  listing.write_text("a.png 7\n")
  with pytest.raises(ImageFormatError, match=r":1: unknown label: 7 is not an id of .*cname_cid"):
    folders.read_file_list(listing, root, classes, "sketch")
  classes.write_text("cup 0\nswan 0\n")
  with pytest.raises(ImageFormatError, match=r"cname_cid_zero\.txt:2: duplicate id: 0"):
    folders.read_class_list(classes)


def _tiny_sketchy(root: pathlib.Path) -> None:
  _write_image(root / "photo/cup/p1.jpg")
  _write_image(root / "sketch/cup/p1-1.png")
  _write_image(root / "sketch/cup/p1-2.png")
  _write_image(root / "sketch/cup/p2-1.png")  # its photo p2.jpg is missing


def test_sketchy_missing_photo(tmp_path):
  _tiny_sketchy(tmp_path)
  photos, sketches = folders.read_sketchy(tmp_path)  # category-level: kept
  assert [s.instance for s in sketches] == ["p1", "p1", "p2"] and photos[0].instance == "p1"
  with pytest.raises(ImageFormatError, match=r"p2-1\.png: missing photo: no .*cup/p2\.\*"):
    folders.read_sketchy(tmp_path, require_photo=True)
  policy = BadInputPolicy("skip")
  _, sketches = folders.read_sketchy(tmp_path, require_photo=True, policy=policy)
  assert [s.instance for s in sketches] == ["p1", "p1"]
  assert policy.counts == {"missing photo": 1}
  _write_image(tmp_path / "sketch/cup/nodash.png")
  with pytest.raises(ImageFormatError, match=r"nodash\.png: bad sketch name"):
    folders.read_sketchy(tmp_path)


def test_quickdraw_bad_files(tmp_path):
  good = {"word": "cat", "drawing": [[[0, 10, 20], [0, 5, 9]]]}
  raw = {"word": "cat", "drawing": [[[0, 500], [0, 700], [0, 20]]]}
  (tmp_path / "cat.ndjson").write_text(
      json.dumps(good) + "\n{not json\n\n" + json.dumps(raw) + "\n" + json.dumps(good) + "\n")
  with pytest.raises(SketchFormatError, match=r"cat\.ndjson:2: malformed JSON"):
    folders.read_quickdraw_drawings(tmp_path)
  policy = BadInputPolicy("skip")
  items = folders.read_quickdraw_drawings(tmp_path, policy=policy)
  assert [i.path.rsplit("#", 1)[1] for i in items] == ["1", "5"]
  assert policy.counts == {"malformed JSON": 1, "not simplified": 1}
  assert load_image(items[1], vector_size=32).shape == (32, 32, 3)
  with pytest.raises(SketchFormatError, match=r"cat\.ndjson:4: not simplified"):
    load_image(ImageItem(f"{tmp_path / 'cat.ndjson'}#4", "cat", "sketch"))
  np.save(tmp_path / "dog.npy", np.zeros((3, 28, 28), np.uint8))
  with pytest.raises(ImageFormatError, match=r"dog\.npy: bad bitmaps: expected uint8 \[N, 784\]"):
    folders.read_quickdraw_bitmaps(tmp_path)
