"""Canvas polylines to SketchXAINet's input inside JAX: normalisation and tokenisation (spec A.1).

The host path (`sketch.normalize.normalize_sketchxai`, then `data.tokenize.tokenize_batch`)
turns a drawing into the model's arrays with numpy. Attacks on the coordinates need the
same map as a differentiable, jittable function of the points, and removal attacks need it
for the drawing with some strokes, or the tails of some strokes, gone. `tokens` is that map
for one sketch: what the host path gives for the drawing made of the kept points, to
float32 rounding (tests/test_vector_attack.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PAD_THRESH = 0.26  # normalize_sketchxai's default: the longer side spans +-0.74
_MIN_DIAGONAL = 1e-2  # canvas units: the host path refuses smaller boxes (a point)


def tokens(xy: jax.Array, lens: jax.Array, kept: jax.Array | None = None, *,
           pad_thresh: float = PAD_THRESH) -> dict[str, jax.Array]:
  """The tokenised sketch made of the first `kept[k]` points of each stroke k.

  Strokes with 0 kept points are dropped and the others move up into consecutive
  slots in drawing order (so later strokes' order embeddings shift, as they would
  for the drawing without them); the kept points are normalised together:
  centred on their bounding box, the longer side scaled to 2 (1 - pad_thresh).

  Args:
    xy: float[S, P, 2] polylines in canvas units (any translation and scale).
    lens: int[S] points of each stroke (0 = empty slot).
    kept: int[S] points kept of each stroke (clipped to `lens`); default all.

  Returns:
    points float32[S, P, 4] rows (dx, dy, 1 - p, p), stroke_len int32[S],
    loc float32[S, 2]: one sketch of `tokenize_batch`'s layout, no batch axis;
    degenerate: bool, the kept points' box has a diagonal below 1e-2 canvas
    units (a point: the host path refuses it; here it is scaled as if its
    longer side were 1e-2, and callers should not trust the model on it).
  """
  slots, num_points = lens.shape[0], xy.shape[1]
  kept = lens if kept is None else jnp.clip(kept, 0, lens)
  real = (jnp.arange(num_points)[None, :] < kept[:, None])[..., None]
  far = jnp.float32(1e30)
  low = jnp.min(jnp.where(real, xy, far), axis=(0, 1))
  high = jnp.max(jnp.where(real, xy, -far), axis=(0, 1))
  side = jnp.max(high - low)
  degenerate = jnp.sum((high - low) ** 2) < _MIN_DIAGONAL**2
  scale = 2.0 * (1.0 - pad_thresh) / jnp.maximum(side, _MIN_DIAGONAL)
  unit = (xy - (low + high) / 2) * scale  # normalize_sketchxai, written as one affine map

  present = kept > 0
  order = jnp.argsort(~present, stable=True)  # kept strokes first, in drawing order
  filled = jnp.arange(slots) < present.sum()
  unit = unit[order]
  stroke_len = jnp.where(filled, kept[order], 0).astype(jnp.int32)
  step = jnp.arange(num_points)[None, :]
  row_real = step < stroke_len[:, None]
  last = step == stroke_len[:, None] - 1
  offsets = jnp.concatenate([jnp.zeros_like(unit[:, :1]), jnp.diff(unit, axis=1)], axis=1)
  pen = jnp.stack([row_real & ~last, last], axis=-1).astype(jnp.float32)
  points = jnp.concatenate([jnp.where(row_real[..., None], offsets, 0.0), pen], axis=-1)
  loc = jnp.where(filled[:, None], unit[:, 0], 0.0)
  return {"points": points.astype(jnp.float32), "stroke_len": stroke_len,
          "loc": loc.astype(jnp.float32), "degenerate": degenerate}
