"""A procedural offline dataset of multi-stroke drawings (quick start, tests).

Twelve classes of simple objects, each a template of strokes in the unit
square. Every drawing is made fresh from its index: a random affine pose,
per-stroke offsets, point jitter, resampled point density, strokes drawn in a
shuffled order and direction half of the time. Coordinates are 0..255 floats
like simplified QuickDraw, so the same normalisation applies.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sketchjax.sketch.sketch import Sketch, to_stroke3


def _arc(cx, cy, r, start_deg, end_deg, n=24):
  t = np.deg2rad(np.linspace(start_deg, end_deg, n))
  return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _line(*points):
  return np.asarray(points, np.float64)


def _templates() -> dict[str, list[np.ndarray]]:
  """Class name -> strokes in the unit square (y down)."""
  rays = [_line((0.5 + 0.22 * np.cos(a), 0.5 + 0.22 * np.sin(a)),
                (0.5 + 0.4 * np.cos(a), 0.5 + 0.4 * np.sin(a)))
          for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
  spiral_t = np.linspace(0, 4 * np.pi, 60)
  return {
      "square": [_line((0.1, 0.1), (0.9, 0.1)), _line((0.9, 0.1), (0.9, 0.9)),
                 _line((0.9, 0.9), (0.1, 0.9)), _line((0.1, 0.9), (0.1, 0.1))],
      "triangle": [_line((0.5, 0.1), (0.9, 0.9)), _line((0.9, 0.9), (0.1, 0.9)),
                   _line((0.1, 0.9), (0.5, 0.1))],
      "circle": [_arc(0.5, 0.5, 0.4, 0, 360, 40)],
      "house": [_line((0.2, 0.45), (0.2, 0.9), (0.8, 0.9), (0.8, 0.45)),
                _line((0.1, 0.5), (0.5, 0.1), (0.9, 0.5)),
                _line((0.42, 0.9), (0.42, 0.65), (0.58, 0.65), (0.58, 0.9))],
      "star": [_line((0.5, 0.05), (0.76, 0.9)), _line((0.76, 0.9), (0.06, 0.36)),
               _line((0.06, 0.36), (0.94, 0.36)), _line((0.94, 0.36), (0.24, 0.9)),
               _line((0.24, 0.9), (0.5, 0.05))],
      "smiley": [_arc(0.5, 0.5, 0.42, 0, 360, 40), _arc(0.35, 0.38, 0.05, 0, 360, 8),
                 _arc(0.65, 0.38, 0.05, 0, 360, 8), _arc(0.5, 0.52, 0.22, 20, 160, 16)],
      "plus": [_line((0.5, 0.1), (0.5, 0.9)), _line((0.1, 0.5), (0.9, 0.5))],
      "arrow": [_line((0.1, 0.5), (0.9, 0.5)), _line((0.65, 0.25), (0.9, 0.5)),
                _line((0.65, 0.75), (0.9, 0.5))],
      "sun": [_arc(0.5, 0.5, 0.18, 0, 360, 24)] + rays,
      "tree": [_line((0.45, 0.95), (0.45, 0.6)), _line((0.55, 0.95), (0.55, 0.6)),
               _arc(0.5, 0.38, 0.3, 0, 360, 32)],
      "spiral": [np.stack([0.5 + 0.03 * spiral_t * np.cos(spiral_t),
                           0.5 + 0.03 * spiral_t * np.sin(spiral_t)], axis=1)],
      "ladder": [_line((0.3, 0.05), (0.3, 0.95)), _line((0.7, 0.05), (0.7, 0.95))]
                + [_line((0.3, y), (0.7, y)) for y in (0.2, 0.4, 0.6, 0.8)],
  }


TEMPLATES = _templates()
CLASS_NAMES = tuple(TEMPLATES)


def _resample(stroke: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Resamples a polyline at a random density (2 to ~40 points)."""
  seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
  arclen = np.concatenate([[0.0], np.cumsum(seg)])
  n = int(np.clip(arclen[-1] * rng.uniform(8, 30), 2, 48))
  t = np.linspace(0.0, arclen[-1], n)
  return np.stack([np.interp(t, arclen, stroke[:, i]) for i in range(2)], axis=1)


def draw(class_id: int, rng: np.random.Generator) -> Sketch:
  """One random drawing of class `class_id`, coordinates in 0..255."""
  strokes = [s.copy() for s in TEMPLATES[CLASS_NAMES[class_id]]]
  if rng.random() < 0.5:
    strokes = [strokes[i] for i in rng.permutation(len(strokes))]
  strokes = [s[::-1] if rng.random() < 0.3 else s for s in strokes]
  angle = np.deg2rad(rng.uniform(-20, 20))
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  scale = rng.uniform(0.6, 1.0) * np.array([rng.uniform(0.85, 1.15), 1.0])
  shift = rng.uniform(0.0, max(0.0, 1.0 - scale.max()), size=2)
  out = []
  for s in strokes:
    s = _resample(s, rng) + rng.normal(0, 0.03, size=2)
    s = s + rng.normal(0, 0.008, size=s.shape)
    s = ((s - 0.5) @ rotation.T) * scale + 0.5 * scale + shift
    out.append(np.clip(s, 0.0, 1.0) * 255.0)
  return Sketch(tuple(out))


@dataclasses.dataclass(frozen=True)
class ProceduralSource:
  """Random-access source of `{"stroke3": float32[L, 3], "label": int32}`.

  Record i is drawn from class `i % num_classes` with a generator seeded by
  (seed, i), so a source is fully reproducible and needs no storage.
  """

  size: int
  seed: int = 0
  num_classes: int = len(CLASS_NAMES)

  def __post_init__(self):
    if not 1 <= self.num_classes <= len(CLASS_NAMES):
      raise ValueError(f"num_classes must be in 1..{len(CLASS_NAMES)}")

  @property
  def class_names(self) -> tuple[str, ...]:
    return CLASS_NAMES[:self.num_classes]

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.size:
      raise IndexError(index)
    label = index % self.num_classes
    sketch = draw(label, np.random.default_rng((self.seed, index)))
    return {"stroke3": to_stroke3(sketch).astype(np.float32),
            "label": np.int32(label)}
