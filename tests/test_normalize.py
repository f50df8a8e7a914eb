"""SketchXAI normalisation and Ramer-Douglas-Peucker simplification."""

import numpy as np
import pytest

from sketchjax.sketch.normalize import (DegenerateSketchError, normalize_sketchxai, rdp, rdp_mask,
                                        simplify)
from sketchjax.sketch.sketch import Sketch


def test_normalize_hand_worked():
  # bbox (0,0)-(4,1): scale 0.74/4 = 0.185, box centred at 0.5, then 2v-1.
  sketch = Sketch(([[0, 0], [2, 1]], [[4, 1]]))
  out = normalize_sketchxai(sketch)
  np.testing.assert_allclose(out.strokes[0], [[-0.74, -0.185], [0.0, 0.185]], atol=1e-12)
  np.testing.assert_allclose(out.strokes[1], [[0.74, 0.185]], atol=1e-12)


def test_normalize_other_pad_and_translation_invariance():
  sketch = Sketch(([[10, 20], [10, 30]],))  # vertical segment of length 10
  out = normalize_sketchxai(sketch, pad_thresh=0.5)
  np.testing.assert_allclose(out.strokes[0], [[0, -0.5], [0, 0.5]], atol=1e-12)


def test_normalize_keeps_times():
  sketch = Sketch(([[0, 0], [3, 4]],), times=([0, 7],))
  np.testing.assert_array_equal(normalize_sketchxai(sketch).times[0], [0, 7])


def test_normalize_real_drawings_span_and_centre(quickdraw_dir):
  from sketchjax.data.formats.ndjson import read_ndjson
  for drawing in read_ndjson(quickdraw_dir / "simplified" / "cat.ndjson"):
    out = normalize_sketchxai(drawing.sketch)
    low, high = out.bounds()
    np.testing.assert_allclose(max(high - low), 1.48, atol=1e-12)
    np.testing.assert_allclose((low + high) / 2, 0, atol=1e-12)
    in_low, in_high = drawing.sketch.bounds()
    np.testing.assert_allclose((high - low) * max(in_high - in_low), (in_high - in_low) * 1.48)


def test_normalize_rejects_degenerate_sketches():
  with pytest.raises(DegenerateSketchError, match="is a point"):
    normalize_sketchxai(Sketch(([[3, 3], [3, 3]], [[3, 3]])))
  with pytest.raises(DegenerateSketchError):
    normalize_sketchxai(Sketch(()))
  tiny = Sketch(([[0, 0], [0.005, 0.005]],))  # diagonal^2 = 5e-5
  with pytest.raises(ValueError, match="< eps=0.0001"):
    normalize_sketchxai(tiny)
  out = normalize_sketchxai(tiny, eps=1e-8)  # SketchXAI's inversion/utils.py threshold
  np.testing.assert_allclose(out.strokes[0], [[-0.74, -0.74], [0.74, 0.74]])


def test_rdp_drops_collinear_points():
  line = np.array([[1, 1], [2, 2], [3, 3], [4, 4]], float)
  np.testing.assert_array_equal(rdp(line, 0.5), [[1, 1], [4, 4]])


def test_rdp_threshold_is_strict_and_keeps_far_points():
  bump = np.array([[0, 0], [1, 1], [2, 0]], float)  # middle is 1 from the chord
  np.testing.assert_array_equal(rdp(bump, 0.5), bump)
  np.testing.assert_array_equal(rdp(bump, 1.0), [[0, 0], [2, 0]])


def test_rdp_hand_worked_zigzag():
  line = np.array([[0, 0], [1, 0.8], [3, 3], [4, 1], [5, -0.3], [6, 0]], float)
  # Chord (0,0)-(6,0): farthest is (3,3) (distance 3). Left chord y = x:
  # (1,0.8) is 0.2/sqrt2 = 0.141 away. Right chord x + y = 6: (4,1) is
  # 1/sqrt2 = 0.707, (5,-0.3) is 1.3/sqrt2 = 0.919, the split. Chord
  # (3,3)-(5,-0.3): (4,1) is |2*-2 + 3.3*1| / sqrt(2^2 + 3.3^2) = 0.181 away.
  np.testing.assert_array_equal(rdp_mask(line, 0.5), [1, 0, 1, 0, 1, 1])
  np.testing.assert_array_equal(rdp_mask(line, 0.95), [1, 0, 1, 0, 0, 1])
  np.testing.assert_array_equal(rdp_mask(line, 0.15), [1, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(rdp_mask(line, 0.1), [1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(rdp_mask(line, 3.0), [1, 0, 0, 0, 0, 1])


def test_rdp_closed_loop_measures_from_the_start_point():
  loop = np.array([[0, 0], [1, 0], [1, 1], [0, 0]], float)
  # Ends coincide: distances from (0,0) are 1 and sqrt2, so (1,1) splits first.
  np.testing.assert_array_equal(rdp_mask(loop, 1.2), [1, 0, 1, 1])
  np.testing.assert_array_equal(rdp_mask(loop, 0.5), [1, 1, 1, 1])


def test_rdp_short_polylines():
  assert rdp(np.zeros((0, 2)), 1.0).shape == (0, 2)
  np.testing.assert_array_equal(rdp([[1, 2]], 1.0), [[1, 2]])
  np.testing.assert_array_equal(rdp([[1, 2], [3, 4]], 1.0), [[1, 2], [3, 4]])


def _recursive_rdp(points, epsilon):
  """Textbook recursive RDP, the oracle."""
  if len(points) < 3:
    return points
  start, end = points[0], points[-1]
  chord = end - start
  norm = np.hypot(*chord)
  best, index = -1.0, 0
  for i in range(1, len(points) - 1):
    v = points[i] - start
    d = abs(chord[0] * v[1] - chord[1] * v[0]) / norm if norm else np.hypot(*v)
    if d > best:
      best, index = d, i
  if best > epsilon:
    left = _recursive_rdp(points[:index + 1], epsilon)
    return np.concatenate([left[:-1], _recursive_rdp(points[index:], epsilon)])
  return np.stack([start, end])


def test_rdp_matches_recursive_oracle_on_random_walks():
  rng = np.random.default_rng(1)
  for _ in range(30):
    walk = np.cumsum(rng.normal(size=(rng.integers(3, 60), 2)) * 3, axis=0)
    epsilon = rng.uniform(0.5, 4)
    np.testing.assert_array_equal(rdp(walk, epsilon), _recursive_rdp(walk, epsilon))


def test_simplify_every_stroke_and_keeps_times_aligned():
  sketch = Sketch(([[0, 0], [1, 0.1], [2, 0]], [[0, 0], [1, 3], [2, 0]]),
                  times=([0, 10, 20], [30, 40, 50]))
  out = simplify(sketch, epsilon=2.0)
  np.testing.assert_array_equal(out.strokes[0], [[0, 0], [2, 0]])
  np.testing.assert_array_equal(out.times[0], [0, 20])
  np.testing.assert_array_equal(out.strokes[1], [[0, 0], [1, 3], [2, 0]])
  np.testing.assert_array_equal(out.times[1], [30, 40, 50])
  assert simplify(Sketch(([[0, 0], [1, 0.1], [2, 0]],))).times is None
