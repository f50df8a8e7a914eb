"""Random affine maps and stroke dropout."""

import numpy as np
import pytest

from sketchjax.sketch.augment import random_affine, stroke_dropout
from sketchjax.sketch.sketch import Sketch

SQUARE = Sketch(([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5]], [[-0.5, 0.5], [0.1, 0.2]]),
                times=([0, 1, 2], [3, 4]))
NO_CHANGE = dict(max_rotation_deg=0.0, scale_range=(1.0, 1.0), max_shear=0.0, max_translate=0.0)


def _pairwise_distances(sketch):
  points = sketch.points()
  return np.linalg.norm(points[:, None] - points[None], axis=-1)


def test_affine_with_zero_ranges_is_identity():
  out = random_affine(SQUARE, np.random.default_rng(0), **NO_CHANGE)
  for a, b in zip(out.strokes, SQUARE.strokes):
    np.testing.assert_allclose(a, b, atol=1e-15)
  np.testing.assert_array_equal(out.times[0], [0, 1, 2])


def test_rotation_alone_keeps_distances_and_the_centre():
  sketch = Sketch(([[0.0, 0.0], [1.0, 0.0], [1.0, 0.6]],))
  out = random_affine(sketch, np.random.default_rng(3), **{**NO_CHANGE, "max_rotation_deg": 45.0})
  np.testing.assert_allclose(_pairwise_distances(out), _pairwise_distances(sketch))
  assert not np.allclose(out.points(), sketch.points())
  # The box centre (0.5, 0.3) is the fixed point.
  pivot = Sketch(([[0.5, 0.3]],))
  low, high = sketch.bounds()
  moved = random_affine(Sketch(sketch.strokes + pivot.strokes), np.random.default_rng(3),
                        **{**NO_CHANGE, "max_rotation_deg": 45.0})
  assert np.allclose((low + high) / 2, [0.5, 0.3])
  np.testing.assert_allclose(moved.strokes[-1], [[0.5, 0.3]], atol=1e-12)


def test_rotation_angle_stays_in_range():
  sketch = Sketch(([[-1.0, 0.0], [1.0, 0.0]],))
  for seed in range(50):
    out = random_affine(sketch, np.random.default_rng(seed), **{**NO_CHANGE, "max_rotation_deg": 15.0})
    dx, dy = out.strokes[0][1] - out.strokes[0][0]
    assert abs(np.degrees(np.arctan2(dy, dx))) <= 15.0 + 1e-9


def test_translation_and_scale_stay_in_range():
  for seed in range(50):
    out = random_affine(SQUARE, np.random.default_rng(seed), max_rotation_deg=0.0,
                        scale_range=(0.9, 1.1), max_shear=0.0, max_translate=0.05)
    low, high = out.bounds()
    assert np.all(np.abs((low + high) / 2) <= 0.05 + 1e-12)
    assert np.all((high - low >= 0.9 - 1e-12) & (high - low <= 1.1 + 1e-12))


def test_affine_is_deterministic_per_seed():
  a = random_affine(SQUARE, np.random.default_rng(7))
  b = random_affine(SQUARE, np.random.default_rng(7))
  c = random_affine(SQUARE, np.random.default_rng(8))
  assert a.equals(b)
  assert not a.equals(c)


def test_dropout_rate_zero_keeps_everything():
  assert stroke_dropout(SQUARE, np.random.default_rng(0), 0.0).equals(SQUARE)


def test_dropout_rate_one_keeps_exactly_one_stroke_with_its_times():
  for seed in range(10):
    out = stroke_dropout(SQUARE, np.random.default_rng(seed), 1.0)
    assert out.num_strokes == 1
    index = [i for i, s in enumerate(SQUARE.strokes) if np.array_equal(s, out.strokes[0])]
    np.testing.assert_array_equal(out.times[0], SQUARE.times[index[0]])


def test_dropout_keeps_order_and_drops_about_rate():
  sketch = Sketch(tuple([[i, i]] for i in range(2000)))
  out = stroke_dropout(sketch, np.random.default_rng(0), 0.3)
  kept = [int(s[0, 0]) for s in out.strokes]
  assert kept == sorted(kept)
  assert abs(len(kept) / 2000 - 0.7) < 0.04


def test_dropout_rejects_bad_rate():
  with pytest.raises(ValueError, match="rate"):
    stroke_dropout(SQUARE, np.random.default_rng(0), 1.5)
