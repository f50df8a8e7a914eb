"""Fast hard rasteriser in JAX: stroke batches to binary ink images.

Coordinates in [-1, 1] map onto the image ([-1, -1] is the top-left corner of
the top-left pixel); x is the column and y the row, downwards as in QuickDraw
and the official Cairo renderer, so a sketch is drawn upright.

Method, O(points + samples + pixels) per sketch rather than O(pixels x
segments): every vertex is drawn, and the sketch's polylines are sampled at a
fixed budget of points evenly spaced in arc length (Chebyshev length in pixels,
so at most 1 pixel apart while the budget lasts, which gives 8-connected
lines); all samples are rounded to pixels and scattered into the grid, which
is then dilated by a `line_width` x `line_width` max filter. A sketch whose ink
is longer than the budget is sampled more sparsely rather than cut. Not
differentiable (see the soft rasteriser for gradients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MAX_SPACING_PIXELS = 0.9  # sample spacing while the budget lasts (< 1 => connected lines)


def absolute_points(points: jax.Array, loc: jax.Array) -> jax.Array:
  """float[..., S, P, 4] shape rows + float[..., S, 2] start points -> float[..., S, P, 2].

  Point t of a stroke is loc + sum of its (dx, dy) rows up to t (row 0 has dx = dy = 0).
  """
  return loc[..., None, :] + jnp.cumsum(points[..., :2], axis=-2)


def _dilate(image: jax.Array, line_width: int) -> jax.Array:
  """Max filter of `line_width` x `line_width` pixels over [..., H, W]."""
  if line_width <= 1:
    return image
  low, high = (line_width - 1) // 2, line_width // 2
  window = (1,) * (image.ndim - 2) + (line_width, line_width)
  padding = ((0, 0),) * (image.ndim - 2) + ((low, high), (low, high))
  return jax.lax.reduce_window(image, 0.0, jax.lax.max, window, (1,) * image.ndim, padding)


def rasterize_polylines(xy: jax.Array, lens: jax.Array, *, size: int = 64, line_width: int = 2,
                        samples: int | None = None) -> jax.Array:
  """Draws one sketch's polylines -> float32[size, size] ink (1 = ink, 0 = paper).

  Args:
    xy: float[S, P, 2] absolute points in [-1, 1] (x, y); rows past a stroke's
      length are ignored.
    lens: int[S] points of each stroke (0 = nothing drawn; 1 = one dot).
    size: image side in pixels.
    line_width: stroke width in pixels (square max filter); >= 1.
    samples: arc-length samples of the whole sketch (default 16 * size).
  """
  if line_width < 1:
    raise ValueError(f"line_width must be >= 1 pixel, got {line_width}")
  samples = 16 * size if samples is None else samples
  if xy.shape[1] < 2:  # no segments: pad one ignored point so the arrays below are non-empty
    xy = jnp.pad(xy, ((0, 0), (0, 2 - xy.shape[1]), (0, 0)))
  num_points = xy.shape[1]
  pixels = (jax.lax.stop_gradient(xy).astype(jnp.float32) + 1.0) * (size / 2) - 0.5
  point_valid = jnp.arange(num_points)[None, :] < lens[:, None]

  start = pixels[:, :-1].reshape(-1, 2)
  delta = (pixels[:, 1:] - pixels[:, :-1]).reshape(-1, 2)
  segment_valid = point_valid[:, 1:].reshape(-1)
  length = jnp.where(segment_valid, jnp.abs(delta).max(-1), 0.0)  # Chebyshev, pixels
  end = jnp.cumsum(length)
  total = end[-1]

  spacing = jnp.maximum(total / samples, _MAX_SPACING_PIXELS)
  arc = jnp.arange(samples, dtype=jnp.float32) * spacing
  segment = jnp.minimum(jnp.searchsorted(end, arc, side="right"), end.size - 1)
  seg_length = length[segment]
  fraction = (arc - (end[segment] - seg_length)) / jnp.maximum(seg_length, 1e-6)
  sampled = start[segment] + jnp.clip(fraction, 0.0, 1.0)[:, None] * delta[segment]

  all_points = jnp.concatenate([pixels.reshape(-1, 2), sampled])
  all_valid = jnp.concatenate([point_valid.reshape(-1), arc < total])
  cells = jnp.round(all_points).astype(jnp.int32)
  inside = all_valid & jnp.all((cells >= 0) & (cells < size), axis=-1)
  flat = jnp.where(inside, cells[:, 1] * size + cells[:, 0], size * size)
  image = jnp.zeros(size * size, jnp.float32).at[flat].set(1.0, mode="drop")
  return _dilate(image.reshape(size, size), line_width)


def rasterize(points: jax.Array, stroke_len: jax.Array, loc: jax.Array, *, size: int = 64,
              line_width: int = 2, samples: int | None = None) -> jax.Array:
  """Draws a tokenised batch -> float32[B, size, size] ink in {0, 1} (1 = ink).

  Args:
    points: float[B, S, P, 4] shape rows (dx, dy, 1-p, p) of the tokeniser.
    stroke_len: int[B, S] points of each slot (0 = empty slot).
    loc: float[B, S, 2] absolute first point of each stroke.
    size, line_width, samples: as in `rasterize_polylines`.
  """
  xy = absolute_points(points, loc)
  draw = lambda xy_, lens_: rasterize_polylines(xy_, lens_, size=size, line_width=line_width,
                                                samples=samples)
  return jax.vmap(draw)(xy, stroke_len)
