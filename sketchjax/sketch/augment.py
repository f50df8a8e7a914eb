"""Random augmentations of a Sketch (host-side numpy, explicit Generator)."""

from __future__ import annotations

import numpy as np

from sketchjax.sketch.sketch import Sketch


def random_affine(sketch: Sketch, rng: np.random.Generator, *,
                  max_rotation_deg: float = 15.0,
                  scale_range: tuple[float, float] = (0.9, 1.1),
                  max_shear: float = 0.1,
                  max_translate: float = 0.05) -> Sketch:
  """A random affine map about the bounding-box centre, then a translation.

  `p -> centre + R @ H @ S @ (p - centre) + t` with rotation R by an angle in
  +-`max_rotation_deg`, x-shear H by a factor in +-`max_shear`, per-axis
  scales S in `scale_range` and t in +-`max_translate` per axis (in sketch
  units; coordinates are assumed normalised to about [-1, 1]). Times are kept.
  """
  if not sketch.num_points:
    return sketch
  angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
  cos, sin = np.cos(angle), np.sin(angle)
  rotation = np.array([[cos, -sin], [sin, cos]])
  shear = np.array([[1.0, rng.uniform(-max_shear, max_shear)], [0.0, 1.0]])
  scale = np.diag(rng.uniform(*scale_range, size=2))
  translation = rng.uniform(-max_translate, max_translate, size=2)
  matrix = rotation @ shear @ scale
  low, high = sketch.bounds()
  centre = (low + high) / 2
  return sketch.map_points(lambda points: (points - centre) @ matrix.T + centre + translation)


def stroke_dropout(sketch: Sketch, rng: np.random.Generator, rate: float) -> Sketch:
  """Drops each stroke with probability `rate`, in order; never drops all."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"rate must be in [0, 1], got {rate}")
  if not sketch.num_strokes:
    return sketch
  keep = rng.random(sketch.num_strokes) >= rate
  if not keep.any():
    keep[rng.integers(sketch.num_strokes)] = True
  strokes = tuple(s for s, k in zip(sketch.strokes, keep) if k)
  times = None if sketch.times is None else tuple(t for t, k in zip(sketch.times, keep) if k)
  return Sketch(strokes, times)
