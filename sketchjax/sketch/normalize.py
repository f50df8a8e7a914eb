"""Coordinate normalisation and Ramer-Douglas-Peucker simplification."""

from __future__ import annotations

import numpy as np

from sketchjax.sketch.sketch import Sketch


class DegenerateSketchError(ValueError):
  """The sketch's bounding box is (nearly) a point, so it cannot be scaled."""


def normalize_sketchxai(sketch: Sketch, *, pad_thresh: float = 0.26,
                        eps: float = 1e-4) -> Sketch:
  """SketchXAI's normalisation (Sketch-R2CNN `SketchUtil.normalization`).

  On all points at once: translate the bounding-box minimum to 0, scale by
  `1 / max_side` (aspect kept), scale by `1 - pad_thresh`, translate the box
  centre to 0.5, map `v -> 2v - 1`. The longer side then spans
  `[-(1 - pad_thresh), 1 - pad_thresh]` (+-0.74) and the box is centred at 0.

  Raises DegenerateSketchError when the squared bounding-box diagonal, in the
  input's units, is below `eps`: 1e-4 as in Sketch-R2CNN's
  `data/sketch_util.py`, which SketchXAI's preprocessing imports; SketchXAI's
  own copy in `inversion/utils.py` uses 1e-8. Times are kept.
  """
  if not sketch.num_points:
    raise DegenerateSketchError("cannot normalise a sketch without points")
  low, high = sketch.bounds()
  size = high - low
  if size @ size < eps:
    raise DegenerateSketchError(
        f"bounding-box diagonal^2 {size @ size:g} < eps={eps:g}: the sketch is a point")
  scale = (1.0 - pad_thresh) / size.max()
  centring = 0.5 - size * scale / 2

  def transform(points: np.ndarray) -> np.ndarray:
    unit = (points - low) * scale + centring
    return unit * 2.0 - 1.0

  return sketch.map_points(transform)


def rdp_mask(polyline: np.ndarray, epsilon: float) -> np.ndarray:
  """Which points of `float[n, 2]` Ramer-Douglas-Peucker keeps, `bool[n]`.

  A point survives when it lies more than `epsilon` from the line through the
  ends of its current segment (from the start point when the ends coincide);
  the ends are always kept. Iterative, one vectorised distance per segment.
  """
  polyline = np.asarray(polyline, np.float64).reshape(-1, 2)
  keep = np.zeros(len(polyline), bool)
  if len(polyline) == 0:
    return keep
  keep[[0, -1]] = True
  segments = [(0, len(polyline) - 1)]
  while segments:
    start, end = segments.pop()
    if end - start < 2:
      continue
    inner = polyline[start + 1:end] - polyline[start]
    chord = polyline[end] - polyline[start]
    length = np.hypot(*chord)
    if length > 0:
      distance = np.abs(chord[0] * inner[:, 1] - chord[1] * inner[:, 0]) / length
    else:
      distance = np.hypot(inner[:, 0], inner[:, 1])
    farthest = int(np.argmax(distance))
    if distance[farthest] > epsilon:
      split = start + 1 + farthest
      keep[split] = True
      segments += [(start, split), (split, end)]
  return keep


def rdp(polyline: np.ndarray, epsilon: float) -> np.ndarray:
  """Ramer-Douglas-Peucker: the kept points of `float[n, 2]`, `float[m, 2]`."""
  polyline = np.asarray(polyline, np.float64).reshape(-1, 2)
  return polyline[rdp_mask(polyline, epsilon)]


def simplify(sketch: Sketch, epsilon: float = 2.0) -> Sketch:
  """RDP on every stroke (QuickDraw used epsilon 2.0 in 0..255 units).

  Times of the kept points are kept.
  """
  masks = [rdp_mask(stroke, epsilon) for stroke in sketch.strokes]
  strokes = tuple(s[m] for s, m in zip(sketch.strokes, masks))
  times = None if sketch.times is None else tuple(t[m] for t, m in zip(sketch.times, masks))
  return Sketch(strokes, times)
