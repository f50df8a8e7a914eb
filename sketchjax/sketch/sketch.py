"""The one sketch value type and its conversions to stroke-3 and stroke-5.

A `Sketch` is an ordered tuple of strokes; each stroke is an absolute polyline
`float64[n_i, 2]` of (x, y) points in drawing order, with optional per-point
times in milliseconds (QuickDraw raw drawings). Units are whatever the source
used (0..255 for simplified QuickDraw, [-1, 1] after `normalize_sketchxai`).

Stroke-3 rows are `(dx, dy, p)`: the offset of a point from the previous one
(the first row is the offset from the origin, i.e. the absolute first point)
and `p = 1` when the pen lifts after the point (the point ends a stroke).
Stroke-5 rows are `(dx, dy, p_down, p_up, p_end)` as in sketch-rnn, padded to a
fixed length with `(0, 0, 0, 0, 1)` rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Sketch:
  """An ordered tuple of absolute polylines.

  Attributes:
    strokes: tuple of `float64[n_i, 2]` arrays, absolute (x, y) per point.
    times: optional tuple of `float64[n_i]` arrays, milliseconds since the
      first point of the drawing (raw QuickDraw only).
  """

  strokes: tuple[np.ndarray, ...]
  times: tuple[np.ndarray, ...] | None = None

  def __post_init__(self):
    strokes = tuple(np.asarray(s, np.float64).reshape(-1, 2) for s in self.strokes)
    object.__setattr__(self, "strokes", strokes)
    if self.times is not None:
      times = tuple(np.asarray(t, np.float64).reshape(-1) for t in self.times)
      if len(times) != len(strokes) or any(
          len(t) != len(s) for t, s in zip(times, strokes)):
        raise ValueError("times must have one entry per point of every stroke")
      object.__setattr__(self, "times", times)

  @property
  def num_strokes(self) -> int:
    return len(self.strokes)

  @property
  def num_points(self) -> int:
    return sum(len(s) for s in self.strokes)

  def points(self) -> np.ndarray:
    """All points, `float64[num_points, 2]`."""
    if not self.strokes:
      return np.zeros((0, 2))
    return np.concatenate(self.strokes, axis=0)

  def bounds(self) -> tuple[np.ndarray, np.ndarray]:
    """(min_xy, max_xy) over all points, each `float64[2]`."""
    pts = self.points()
    return pts.min(axis=0), pts.max(axis=0)

  def map_points(self, fn) -> "Sketch":
    """A sketch whose every stroke is `fn(stroke)`; times are kept."""
    return Sketch(tuple(fn(s) for s in self.strokes), self.times)

  def equals(self, other: "Sketch") -> bool:
    """Exact equality of strokes (and times where both have them)."""
    if self.num_strokes != other.num_strokes:
      return False
    if not all(np.array_equal(a, b) for a, b in zip(self.strokes, other.strokes)):
      return False
    if self.times is None or other.times is None:
      return self.times is None and other.times is None
    return all(np.array_equal(a, b) for a, b in zip(self.times, other.times))


def to_stroke3(sketch: Sketch) -> np.ndarray:
  """Stroke-3 `float64[num_points, 3]` rows `(dx, dy, p)`."""
  pts = sketch.points()
  out = np.zeros((len(pts), 3))
  if len(pts):
    out[:, :2] = np.diff(pts, axis=0, prepend=np.zeros((1, 2)))
    ends = np.cumsum([len(s) for s in sketch.strokes]) - 1
    out[ends, 2] = 1.0
  return out


def from_stroke3(rows: np.ndarray) -> Sketch:
  """Inverse of `to_stroke3`. A trailing stroke without `p = 1` is kept."""
  rows = np.asarray(rows, np.float64).reshape(-1, 3)
  absolute = np.cumsum(rows[:, :2], axis=0)
  ends = np.flatnonzero(rows[:, 2] > 0) + 1
  if len(rows) and (len(ends) == 0 or ends[-1] != len(rows)):
    ends = np.append(ends, len(rows))
  starts = np.concatenate([[0], ends[:-1]]).astype(int)
  return Sketch(tuple(absolute[a:b] for a, b in zip(starts, ends)))


def to_stroke5(sketch: Sketch, max_len: int | None = None) -> np.ndarray:
  """Stroke-5 `float64[max_len, 5]`; raises if the sketch has more points."""
  s3 = to_stroke3(sketch)
  max_len = len(s3) if max_len is None else max_len
  if len(s3) > max_len:
    raise ValueError(f"sketch has {len(s3)} points, more than max_len={max_len}")
  out = np.zeros((max_len, 5))
  out[:len(s3), :2] = s3[:, :2]
  out[:len(s3), 3] = s3[:, 2]
  out[:len(s3), 2] = 1.0 - s3[:, 2]
  out[len(s3):, 4] = 1.0
  return out


def from_stroke5(rows: np.ndarray) -> Sketch:
  """Inverse of `to_stroke5`: rows up to the first `p_end` row."""
  rows = np.asarray(rows, np.float64).reshape(-1, 5)
  end = np.flatnonzero(rows[:, 4] > 0)
  rows = rows[:end[0]] if len(end) else rows
  return from_stroke3(np.concatenate([rows[:, :2], rows[:, 3:4]], axis=1))
