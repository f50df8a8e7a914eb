"""The Sketch value type and its stroke-3 / stroke-5 conversions."""

import numpy as np
import pytest

from sketchjax.sketch.sketch import Sketch, from_stroke3, from_stroke5, to_stroke3, to_stroke5

# Two strokes: (1,2)->(4,6) and the dot (0,0).
TWO_STROKES = Sketch(([[1, 2], [4, 6]], [[0, 0]]))
STROKE3 = np.array([[1, 2, 0], [3, 4, 1], [-4, -6, 1]], float)


def test_post_init_makes_float64_polylines():
  sketch = Sketch(([1, 2, 3, 4],), times=([0, 5],))
  assert sketch.strokes[0].dtype == np.float64
  np.testing.assert_array_equal(sketch.strokes[0], [[1, 2], [3, 4]])
  np.testing.assert_array_equal(sketch.times[0], [0.0, 5.0])


def test_times_must_match_points():
  with pytest.raises(ValueError, match="one entry per point"):
    Sketch(([[0, 0], [1, 1]],), times=([0],))
  with pytest.raises(ValueError, match="one entry per point"):
    Sketch(([[0, 0]], [[1, 1]]), times=([0],))


def test_counts_points_and_bounds():
  assert TWO_STROKES.num_strokes == 2
  assert TWO_STROKES.num_points == 3
  np.testing.assert_array_equal(TWO_STROKES.points(), [[1, 2], [4, 6], [0, 0]])
  low, high = TWO_STROKES.bounds()
  np.testing.assert_array_equal(low, [0, 0])
  np.testing.assert_array_equal(high, [4, 6])
  assert Sketch(()).points().shape == (0, 2)


def test_equals_compares_points_and_times():
  same = Sketch(([[1, 2], [4, 6]], [[0, 0]]))
  assert TWO_STROKES.equals(same)
  assert not TWO_STROKES.equals(Sketch(([[1, 2], [4, 6]], [[0, 1]])))
  assert not TWO_STROKES.equals(Sketch(([[1, 2], [4, 6], [0, 0]],)))
  timed = Sketch(TWO_STROKES.strokes, times=([0, 1], [2]))
  assert not timed.equals(TWO_STROKES)
  assert not timed.equals(Sketch(TWO_STROKES.strokes, times=([0, 1], [3])))
  assert timed.equals(Sketch(TWO_STROKES.strokes, times=([0, 1], [2])))


def test_map_points_keeps_times():
  timed = Sketch(TWO_STROKES.strokes, times=([0, 1], [2]))
  moved = timed.map_points(lambda p: p + 1)
  np.testing.assert_array_equal(moved.strokes[1], [[1, 1]])
  np.testing.assert_array_equal(moved.times[0], [0, 1])
  np.testing.assert_array_equal(moved.times[1], [2])


def test_to_stroke3_hand_worked():
  np.testing.assert_array_equal(to_stroke3(TWO_STROKES), STROKE3)
  assert to_stroke3(Sketch(())).shape == (0, 3)


def test_from_stroke3_inverts_to_stroke3():
  assert from_stroke3(STROKE3).equals(TWO_STROKES)


def test_from_stroke3_keeps_an_unterminated_last_stroke():
  rows = STROKE3.copy()
  rows[-1, 2] = 0
  sketch = from_stroke3(rows)
  assert sketch.num_strokes == 2
  np.testing.assert_array_equal(sketch.strokes[1], [[0, 0]])


def test_to_stroke5_pads_with_end_rows():
  rows = to_stroke5(TWO_STROKES, max_len=5)
  np.testing.assert_array_equal(rows, [
      [1, 2, 1, 0, 0],
      [3, 4, 0, 1, 0],
      [-4, -6, 0, 1, 0],
      [0, 0, 0, 0, 1],
      [0, 0, 0, 0, 1],
  ])
  assert to_stroke5(TWO_STROKES).shape == (3, 5)


def test_to_stroke5_rejects_too_long_a_sketch():
  with pytest.raises(ValueError, match="more than max_len=2"):
    to_stroke5(TWO_STROKES, max_len=2)


def test_from_stroke5_inverts_to_stroke5_and_stops_at_first_end():
  rows = to_stroke5(TWO_STROKES, max_len=6)
  rows[4] = [9, 9, 1, 0, 0]  # after the first end row: ignored
  assert from_stroke5(rows).equals(TWO_STROKES)
  assert from_stroke5(to_stroke5(TWO_STROKES)).equals(TWO_STROKES)


def test_random_round_trips_are_exact_on_integers():
  rng = np.random.default_rng(0)
  for _ in range(20):
    lengths = rng.integers(1, 6, size=rng.integers(1, 5))
    sketch = Sketch(tuple(rng.integers(0, 256, size=(n, 2)) for n in lengths))
    assert from_stroke3(to_stroke3(sketch)).equals(sketch)
    assert from_stroke5(to_stroke5(sketch, max_len=30)).equals(sketch)
