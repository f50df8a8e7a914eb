"""The official preprocessings: hand-worked crops and resizes, and the real images."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image
import pytest

from conftest import SHARED_DATA
from sketchjax.data.formats.image_folders import load_image, read_class_folders, read_sketchy
from sketchjax.data.image_preprocess import (CIFAR_MEAN, CIFAR_STD, SETTINGS, Preprocess,
                                             resize_linear_cv2, zse_square_sketch)


def _white(height: int, width: int) -> np.ndarray:
  return np.full((height, width, 3), 255, np.uint8)


def test_zse_crop_hand_worked():
  # Ink rows 30..49, columns 20..79 of a 100 x 100 page. The official slice keeps
  # rows [20, 59) and columns [10, 89): 39 x 79. With S = 79 the resize is the
  # identity; the 40 missing rows are 20 of white above and 20 below.
  image = _white(100, 100)
  image[30:50, 20:80] = 0
  out = zse_square_sketch(image, 79)
  assert out.shape == (79, 79, 3)
  expected = _white(79, 79)
  expected[30:50, 10:70] = 0
  np.testing.assert_array_equal(out, expected)
  normalised = Preprocess("zse", 79)(image, "sketch")
  assert normalised.dtype == np.float32
  np.testing.assert_array_equal(normalised, expected.astype(np.float32) / 127.5 - 1)


def test_zse_crop_threshold_margin_clip_and_odd_padding():
  image = _white(40, 30)
  image[0, 0] = (100, 100, 100)  # R + G + B = 300: ink, at the corner (margin clipped)
  image[39, 29] = (100, 100, 101)  # 301: paper
  # Crop [0, 10) x [0, 10), S = 10: unchanged; only the corner pixel is dark.
  out = zse_square_sketch(image, 10)
  assert out.shape == (10, 10, 3) and out[0, 0].tolist() == [100, 100, 100]
  assert (out.reshape(-1, 3)[1:] == 255).all()
  # A 3-wide, 6-tall crop at S = 6: 3 columns of padding, 1 before and 2 after.
  tall = _white(6, 3)
  tall[:, 1] = 0
  out = zse_square_sketch(tall, 6)
  assert (out[:, 2, 0] == 0).all() and (np.delete(out, 2, axis=1) == 255).all()
  # No ink at all: the whole page, resized and padded.
  blank = zse_square_sketch(_white(20, 10), 8)
  assert blank.shape == (8, 8, 3) and (blank == 255).all()


def test_resize_linear_cv2_hand_worked():
  row = np.array([[0, 100]], np.uint8)[..., None].repeat(3, -1)  # [1, 2, 3]
  # cv2: source x = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped ends.
  out = resize_linear_cv2(row, 1, 4)
  assert out[0, :, 0].tolist() == [0, 25, 75, 100]
  # Shrinking without antialiasing: 4 -> 2 samples between pixels 0-1 and 2-3.
  out = resize_linear_cv2(np.array([[0, 10, 200, 250]], np.uint8)[..., None], 1, 2)
  assert out[0, :, 0].tolist() == [5, 225]
  # cv2.resize(image, (3, 5)) as opencv-python-headless 5.1 returns it (its rounding
  # of fixed-point weights included).
  image = np.array([[81, 24, 213, 161], [21, 86, 147, 172], [13, 133, 233, 36]], np.uint8)
  assert resize_linear_cv2(image[..., None], 5, 3)[..., 0].tolist() == [
      [71, 118, 169], [55, 118, 169], [32, 117, 168], [32, 156, 108], [33, 183, 69]]


def test_dfsbir_and_mobilenet_constants():
  grey = np.full((37, 53, 3), 128, np.uint8)
  for modality in ("photo", "sketch"):
    dfsbir = Preprocess("dfsbir", 16)(grey, modality)
    np.testing.assert_allclose(dfsbir, np.broadcast_to((128 / 255 - CIFAR_MEAN) / CIFAR_STD,
                                                       (16, 16, 3)), rtol=1e-6)
    mobilenet = Preprocess("mobilenet", 16)(grey, modality)
    np.testing.assert_allclose(mobilenet, np.full((16, 16, 3), 128 / 127.5 - 1), atol=1e-6)


def test_bad_arguments():
  with pytest.raises(ValueError, match="unknown preprocessing 'imagenet'; valid settings: "
                     "zse, dfsbir, mobilenet"):
    Preprocess("imagenet")
  with pytest.raises(ValueError, match="image_size must be >= 1"):
    Preprocess("zse", 0)
  with pytest.raises(ValueError, match="modality must be one of"):
    Preprocess()(_white(4, 4), "drawing")
  with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\] RGB image, got float32 \[4, 4, 3\]"):
    Preprocess()(_white(4, 4).astype(np.float32), "photo")
  with pytest.raises(ValueError, match=r"got uint8 \[4, 4\]"):
    Preprocess()(_white(4, 4)[..., 0], "photo")


@pytest.fixture
def real_images() -> dict[str, np.ndarray]:
  sketchy, pacs = SHARED_DATA / "sketchy", SHARED_DATA / "tuberlin_pacs"
  if not (sketchy.exists() and pacs.exists()):
    pytest.skip(f"real data not found at {sketchy} / {pacs}: these tests need the "
                "project's ../shared folder next to the checkout")
  photos, sketches = read_sketchy(sketchy)
  pacs_photos, pacs_sketches = read_class_folders(pacs)
  return {"sketchy photo": load_image(photos[0]), "sketchy sketch": load_image(sketches[0]),
          "pacs photo": load_image(pacs_photos[0]), "pacs sketch": load_image(pacs_sketches[0])}


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("size", [224, 64])
def test_real_images_shapes_and_ranges(real_images, setting, size):
  pre = Preprocess(setting, size)
  white_dfsbir = (1 - CIFAR_MEAN) / CIFAR_STD
  for name, image in real_images.items():
    out = pre(image, name.split()[1])
    assert out.shape == (size, size, 3) and out.dtype == np.float32, name
    if setting == "dfsbir":
      assert ((out >= -CIFAR_MEAN / CIFAR_STD - 1e-5) & (out <= white_dfsbir + 1e-5)).all()
    else:
      assert out.min() >= -1 and out.max() <= 1, name
    assert out.std() > 0.05, name


def test_zse_real_sketch_fills_the_square(real_images):
  for name in ("sketchy sketch", "pacs sketch"):
    out = Preprocess("zse", 224)(real_images[name], "sketch")
    ink_rows, ink_cols = np.nonzero(out.sum(-1) <= 3 * (300 / 3 / 127.5 - 1))
    extent = max(np.ptp(ink_rows), np.ptp(ink_cols)) + 1
    # The ink's long side spans the square but for the 10-pixel margins, scaled.
    assert 0.75 * 224 < extent < 224, (name, extent)
    assert (out[0, 0] == 1).all() and (out[-1, -1] == 1).all(), name


def test_zse_photo_is_pillow_bicubic(real_images):
  photo = real_images["pacs photo"]
  out = Preprocess("zse", 96)(photo, "photo")
  bicubic = np.asarray(Image.fromarray(photo).resize((96, 96), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(np.round((out + 1) * 127.5).astype(np.uint8), bicubic)
  bilinear = np.asarray(Image.fromarray(photo).resize((96, 96), Image.Resampling.BILINEAR))
  assert not np.array_equal(bicubic, bilinear)
