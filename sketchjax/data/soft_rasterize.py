"""Differentiable (soft) rasteriser in JAX, and the official QuickDraw bitmap settings.

Every stroke is a polyline of segments; a segment's ink at a sample point u is
a smooth function of the distance d(u) from u to the segment,

  ink(d) = smoothstep((w/2 + e/2 - d) / e)      (C1; 1 inside, 0 outside),

w the line diameter and e the width of the soft edge, both in pixels. Ink is
composited as paint layers, each with an opacity alpha in [0, 1]:

  image = 1 - prod_layers (1 - alpha * layer),

which is cairo's OVER of opaque white paint (design spec B.3). Two levels, as
cairo draws: a stroke is the union of its segments (per-segment opacity),
taken at `supersample` x `supersample` samples a pixel and box filtered to
anti-aliased coverage; the image is the strokes composited one over another
at pixel level (per-stroke opacity). Everything is differentiable in the
point coordinates and in both opacities.

Culling: ink is exactly 0 farther than w/2 + e/2 from a segment, so the
canvas is cut into tiles of `tile` x `tile` pixels and each segment is drawn
only on the tiles it reaches (its (segment, tile) pairs, `segment_ink`). The
image is the same as drawing every segment everywhere, at a fraction of the
cost (a 28-pixel QuickDraw drawing: ~120 pairs of 16 x 16 samples instead of
~40 segments x 112 x 112). Pairs are packed into `num_pairs` rows, a static
size: `tile_pair_budget` gives it for a batch of sketches.

Pixel coordinates: pixel (row i, column j) covers x in [j, j + 1], y in
[i, i + 1]; x is the column, y the row (downwards, as in QuickDraw). The hard
rasteriser's [-1, 1] coordinates map here by `normalized_to_pixels`.

Official bitmaps (../shared/data/SOURCES.md): 256-unit canvas, line diameter
16, padding 16, round caps and joins, the drawing offset by (256 - max_xy) / 2,
translated by (2 * 16 + 16) / 2 and scaled by 28 / (256 + 2 * 16 + 16);
`official_pixels` applies that transform and `OFFICIAL` holds the settings.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_CANVAS = 256.0
_OFFICIAL_LINE = 16.0
_OFFICIAL_PADDING = 16.0
_OFFICIAL_SIZE = 28


@dataclasses.dataclass(frozen=True)
class RasterSettings:
  """How the soft rasteriser draws.

  Attributes:
    size: image side in pixels.
    line_width: line diameter in pixels (round caps and joins).
    edge: width of the soft edge in pixels (sub-sample units: 1 / supersample
      gives anti-aliased coverage close to exact area coverage).
    supersample: samples per pixel side; the image is their mean.
    tile: side of the culling tiles in pixels (speed only, the image does
      not depend on it).
  """

  size: int = 28
  line_width: float = 1.5
  edge: float = 0.25
  supersample: int = 4
  tile: int = 4

  def __post_init__(self):
    if self.size < 1 or self.supersample < 1 or self.tile < 1:
      raise ValueError(f"size, supersample and tile must be >= 1, got {self.size}, "
                       f"{self.supersample}, {self.tile}")
    if self.line_width <= 0 or self.edge <= 0:
      raise ValueError(f"line_width and edge must be > 0, got {self.line_width}, {self.edge}")


_OFFICIAL_SCALE = _OFFICIAL_SIZE / (_CANVAS + 2 * _OFFICIAL_PADDING + _OFFICIAL_LINE)
# The official bitmaps: line 16 canvas units = 1.47 pixels. Mean absolute error
# against the 360 official bitmaps of SOURCES.md, in 0..255 units: 0.72 with
# 4 x 4 samples a pixel (these settings), 0.40 with 8 x 8 (4x the cost), 1.71 with 2 x 2.
OFFICIAL = RasterSettings(size=_OFFICIAL_SIZE, line_width=_OFFICIAL_LINE * _OFFICIAL_SCALE,
                          edge=1.0 / 4, supersample=4)


def official_pixels(strokes: Sequence[np.ndarray]) -> list[np.ndarray]:
  """Simplified QuickDraw strokes (float[n, 2], 0..255) -> 28-pixel coordinates of
  the official bitmaps: offset by (256 - max_xy) / 2, translate by (2 * 16 + 16) / 2,
  scale by 28 / (256 + 2 * 16 + 16)."""
  max_xy = np.max(np.concatenate([np.asarray(s, np.float64) for s in strokes]), axis=0)
  offset = (_CANVAS - max_xy) / 2 + (2 * _OFFICIAL_PADDING + _OFFICIAL_LINE) / 2
  return [(np.asarray(s, np.float64) + offset) * _OFFICIAL_SCALE for s in strokes]


def normalized_to_pixels(xy: jax.Array, size: int) -> jax.Array:
  """[-1, 1] coordinates (the hard rasteriser's) -> pixel coordinates of a size^2 image."""
  return (xy + 1.0) * (size / 2)


def pad_strokes(strokes: Sequence[np.ndarray], num_strokes: int,
                num_points: int) -> tuple[np.ndarray, np.ndarray]:
  """Polylines -> (xy float32[num_strokes, num_points, 2], lens int32[num_strokes]).

  Raises when a stroke or the sketch does not fit (no silent truncation).
  """
  if len(strokes) > num_strokes:
    raise ValueError(f"sketch has {len(strokes)} strokes, more than the {num_strokes} slots")
  xy = np.zeros((num_strokes, num_points, 2), np.float32)
  lens = np.zeros(num_strokes, np.int32)
  for k, stroke in enumerate(strokes):
    if len(stroke) > num_points:
      raise ValueError(f"stroke {k} has {len(stroke)} points, more than {num_points}")
    xy[k, :len(stroke)] = stroke
    xy[k, len(stroke):] = stroke[-1]
    lens[k] = len(stroke)
  return xy, lens


class Segments(NamedTuple):
  """A sketch's segments laid flat, in drawing order.

  Attributes:
    a, b: float[N, 2] segment ends in pixels.
    stroke: int32[N] stroke slot of each segment.
    valid: bool[N]; padding segments draw nothing.
  """

  a: jax.Array
  b: jax.Array
  stroke: jax.Array
  valid: jax.Array


def polyline_segments(xy: jax.Array, lens: jax.Array,
                      num_segments: int | None = None) -> Segments:
  """Polylines float[S, P, 2] with int[S] lengths -> their segments, flat.

  Segment g of a stroke joins its points g and g + 1; a one-point stroke is
  one zero-length segment (a dot, as cairo draws it with round caps). With
  `num_segments` = N the valid segments are packed first into N rows (jittable;
  count them with `count_segments` to choose N: segments past N are dropped);
  by default N = S * max(P - 1, 1), one row per (stroke, segment) slot.
  """
  slots, num_points = lens.shape[0], xy.shape[1]
  if num_points == 1:
    a = b = xy
    valid = (lens > 0)[:, None]
  else:
    g = jnp.arange(num_points - 1)
    a, b = xy[:, :-1], xy[:, 1:]
    b = jnp.where((lens == 1)[:, None, None], a, b)  # a dot does not reach the padding
    valid = (g[None, :] < jnp.maximum(lens[:, None] - 1, 1)) & (lens[:, None] > 0)
  stroke = jnp.broadcast_to(jnp.arange(slots, dtype=jnp.int32)[:, None], valid.shape)
  a, b, stroke, valid = a.reshape(-1, 2), b.reshape(-1, 2), stroke.reshape(-1), valid.reshape(-1)
  if num_segments is not None:
    (index,) = jnp.nonzero(valid, size=num_segments, fill_value=0)
    in_range = jnp.arange(num_segments) < valid.sum()
    a, b, stroke, valid = a[index], b[index], stroke[index], in_range
  return Segments(a, b, stroke, valid)


def count_segments(lens: np.ndarray) -> int:
  """Segments `polyline_segments` draws for int[..., S] stroke lengths (max over the batch)."""
  lens = np.asarray(lens)
  per_sketch = np.where(lens > 0, np.maximum(lens - 1, 1), 0).sum(-1)
  return int(np.max(per_sketch)) if per_sketch.size else 0


def _smoothstep(x: jax.Array) -> jax.Array:
  x = jnp.clip(x, 0.0, 1.0)
  return x * x * (3.0 - 2.0 * x)


def _reach(settings: RasterSettings) -> float:
  """Distance in pixels beyond which a segment leaves no ink."""
  return settings.line_width / 2 + settings.edge / 2


def _tiles_per_side(settings: RasterSettings) -> int:
  return -(-settings.size // settings.tile)


def _touches(a, b, valid, settings: RasterSettings, margin: float = 0.0):
  """bool[N, T, T]: segment n's ink reaches a sample of tile (row, column) (numpy or jax).

  Conservative (the box of the segment grown by its reach against the tile's
  sample centres), so a pair left out has exactly zero ink.
  """
  xp = np if isinstance(a, np.ndarray) else jnp
  reach = _reach(settings) + margin
  low, high = xp.minimum(a, b) - reach, xp.maximum(a, b) + reach  # [N, 2]
  start = xp.arange(_tiles_per_side(settings)) * settings.tile
  first = start + 0.5 / settings.supersample  # the tile's first and last sample centres
  last = start + settings.tile - 0.5 / settings.supersample
  columns = (high[:, 0, None] >= first) & (low[:, 0, None] <= last)  # [N, T]
  rows = (high[:, 1, None] >= first) & (low[:, 1, None] <= last)
  return rows[:, :, None] & columns[:, None, :] & valid[:, None, None]


class Ink(NamedTuple):
  """Each segment's ink on the tiles it reaches, as packed (segment, tile) pairs.

  Attributes:
    values: float32[M, t, t] ink at the samples of the pair's tile (t = tile *
      supersample samples, rows = y), 0 for padding pairs.
    segment: int32[M] segment row of each pair.
    tile: int32[M] tile of each pair, row-major over the T x T tiles.
    valid: bool[M]; padding pairs draw nothing.
    complete: bool[] whether the M rows held every pair of the sketch.
  """

  values: jax.Array
  segment: jax.Array
  tile: jax.Array
  valid: jax.Array
  complete: jax.Array


def segment_ink(segments: Segments, settings: RasterSettings,
                num_pairs: int | None = None) -> Ink:
  """Ink of each segment alone on every tile it reaches (0 for padding segments).

  Args:
    segments: from `polyline_segments`.
    settings: how to draw.
    num_pairs: M rows for the (segment, tile) pairs (static); default every
      pair, N * T^2 (no saving). With fewer rows than the sketch has pairs,
      `complete` is False and `stroke_coverage` returns NaN (rather than a
      silently incomplete image): `tile_pair_budget` gives a size that fits.

  The sample coordinates are separate broadcast axes ([M, 1, t] and [M, t, 1])
  so that XLA fuses the distance computation into one loop over [M, t, t].
  """
  tiles = _tiles_per_side(settings)
  reaches = _touches(jax.lax.stop_gradient(segments.a), jax.lax.stop_gradient(segments.b),
                     segments.valid, settings).reshape(-1)
  num_pairs = reaches.shape[0] if num_pairs is None else num_pairs
  (pair,) = jnp.nonzero(reaches, size=num_pairs, fill_value=0)
  count = reaches.sum()
  valid = jnp.arange(num_pairs) < count
  segment, tile = (pair // tiles**2).astype(jnp.int32), (pair % tiles**2).astype(jnp.int32)

  samples = settings.tile * settings.supersample
  local = (jnp.arange(samples, dtype=jnp.float32) + 0.5) / settings.supersample
  ux = ((tile % tiles) * settings.tile)[:, None, None] + local[None, None, :]
  uy = ((tile // tiles) * settings.tile)[:, None, None] + local[None, :, None]
  a, b = segments.a[segment], segments.b[segment]
  ax, ay = a[:, 0, None, None], a[:, 1, None, None]
  abx, aby = b[:, 0, None, None] - ax, b[:, 1, None, None] - ay
  length2 = abx * abx + aby * aby
  degenerate = length2 < 1e-12  # a dot: the distance to `a` (no 1/0 in the gradient)
  t = ((ux - ax) * abx + (uy - ay) * aby) / jnp.where(degenerate, 1.0, length2)
  t = jnp.where(degenerate, 0.0, jnp.clip(t, 0.0, 1.0))
  gap_x, gap_y = ux - (ax + t * abx), uy - (ay + t * aby)
  distance = jnp.sqrt(gap_x * gap_x + gap_y * gap_y + 1e-12)
  ink = _smoothstep((_reach(settings) - distance) / settings.edge)
  ink = jnp.where(valid[:, None, None], ink, 0.0)
  return Ink(ink, segment, tile, valid, count <= num_pairs)


def tile_pair_budget(xy: np.ndarray, lens: np.ndarray, settings: RasterSettings, *,
                     batch_total: bool = False) -> int:
  """`num_pairs` for drawing these sketches: the most (segment, tile) pairs of any
  of them (to draw them one at a time) or with `batch_total` the pairs of all of
  them (`draw_batch`), rounded up to a power of two (host side; float[..., S, P, 2]
  pixel polylines, int[..., S] lengths)."""
  xy = np.asarray(xy, np.float32).reshape(-1, *np.shape(xy)[-3:])
  lens = np.asarray(lens).reshape(-1, np.shape(lens)[-1])
  segments = jax.vmap(polyline_segments)(xy, lens)  # every (stroke, segment) slot
  a, b, valid = (np.asarray(x) for x in (segments.a, segments.b, segments.valid))
  counts = [int(_touches(a[i].astype(np.float64), b[i].astype(np.float64), valid[i], settings,
                         margin=1e-3).sum()) for i in range(len(xy))]
  return _power_of_two(sum(counts) if batch_total else max(counts, default=0))


def composite(layers: jax.Array, opacity: jax.Array | None = None) -> jax.Array:
  """OVER-composite of white layers: 1 - prod_i (1 - opacity_i * layers_i).

  Args:
    layers: float[N, ...] ink of each layer in [0, 1].
    opacity: float[N] in [0, 1] (default 1).

  Returns:
    float[...] ink.
  """
  if opacity is None:
    return 1.0 - jnp.prod(1.0 - layers, axis=0)
  opacity = opacity.reshape(opacity.shape + (1,) * (layers.ndim - 1))
  return 1.0 - jnp.prod(1.0 - opacity * layers, axis=0)


def stroke_coverage(ink: Ink, segments: Segments, num_strokes: int, settings: RasterSettings,
                    segment_opacity: jax.Array | None = None) -> jax.Array:
  """Each stroke alone, anti-aliased -> float32[num_strokes, size, size].

  A stroke is the union of its segments, taken per sample (1 - prod over its
  segments of (1 - opacity * ink), as a sum of logs by stroke and tile), then
  box filtered to pixels: cairo's coverage of one stroked path. Only the
  (stroke, tile) cells that some pair reaches are computed; the rest is 0.

  Args:
    ink: from `segment_ink`.
    segments: the segments it was drawn from.
    num_strokes: S.
    settings: the settings it was drawn with.
    segment_opacity: optional float[N], default 1.
  """
  values = ink.values
  if segment_opacity is not None:
    values = segment_opacity[ink.segment][:, None, None] * values
  # (1 - 1e-6) keeps log1p finite where ink is 1, so gradients stay exact products.
  log_clear = jnp.log1p(-values * (1.0 - 1e-6))
  tiles, rows = _tiles_per_side(settings), values.shape[0]
  num_cells = num_strokes * tiles**2
  cell = jnp.where(ink.valid, segments.stroke[ink.segment] * tiles**2 + ink.tile, num_cells)
  cells, inverse = jnp.unique(cell, size=rows, fill_value=num_cells, return_inverse=True)
  per_cell = 1.0 - jnp.exp(jax.ops.segment_sum(log_clear, inverse.reshape(-1), rows))
  per_cell = downsample(per_cell, settings.supersample)  # [M, tile, tile] pixels
  canvas = jnp.zeros((num_cells + 1,) + per_cell.shape[1:], per_cell.dtype)
  canvas = canvas.at[cells].add(per_cell)[:num_cells]  # cells are unique: add = set
  side = tiles * settings.tile
  canvas = canvas.reshape(num_strokes, tiles, tiles, settings.tile, settings.tile)
  canvas = canvas.transpose(0, 1, 3, 2, 4).reshape(num_strokes, side, side)
  return jnp.where(ink.complete, canvas[:, :settings.size, :settings.size], jnp.nan)


def downsample(samples: jax.Array, supersample: int) -> jax.Array:
  """Box filter: float[..., n * s, n * s] -> float[..., n, n]."""
  if supersample == 1:
    return samples
  *lead, h, w = samples.shape
  blocks = samples.reshape(*lead, h // supersample, supersample, w // supersample, supersample)
  return blocks.mean(axis=(-3, -1))


def draw_strokes(xy: jax.Array, lens: jax.Array, settings: RasterSettings, *,
                 num_segments: int | None = None, num_pairs: int | None = None) -> jax.Array:
  """One sketch's strokes, each alone -> float32[S, size, size] coverage (`stroke_coverage`);
  arguments as `soft_rasterize`."""
  segments = polyline_segments(xy, lens, num_segments)
  return stroke_coverage(segment_ink(segments, settings, num_pairs), segments, lens.shape[0],
                         settings)


def draw_batch(xy: jax.Array, lens: jax.Array, settings: RasterSettings, *, num_segments: int,
               num_pairs: int) -> jax.Array:
  """B sketches' strokes, each alone -> float32[B, S, size, size]: `draw_strokes` of every
  sketch, with the (segment, tile) pairs of the whole batch packed together, so the
  work follows the batch's total ink rather than B times its largest sketch.

  Args:
    xy: float[B, S, P, 2] pixel polylines; lens: int[B, S].
    num_segments: N segment rows a sketch (`count_segments`).
    num_pairs: pair rows for the whole batch (`tile_pair_budget(..., batch_total=True)`).
  """
  num_sketches, num_strokes = lens.shape
  segments = jax.vmap(lambda x, l: polyline_segments(x, l, num_segments))(xy, lens)
  stroke = segments.stroke + num_strokes * jnp.arange(num_sketches, dtype=jnp.int32)[:, None]
  flat = Segments(segments.a.reshape(-1, 2), segments.b.reshape(-1, 2), stroke.reshape(-1),
                  segments.valid.reshape(-1))  # stroke ids b * S + k
  coverage = stroke_coverage(segment_ink(flat, settings, num_pairs), flat,
                             num_sketches * num_strokes, settings)
  return coverage.reshape(num_sketches, num_strokes, settings.size, settings.size)


def soft_rasterize(xy: jax.Array, lens: jax.Array, settings: RasterSettings, *,
                   stroke_opacity: jax.Array | None = None,
                   segment_opacity: jax.Array | None = None,
                   num_segments: int | None = None,
                   num_pairs: int | None = None) -> jax.Array:
  """One sketch -> float32[size, size] anti-aliased ink in [0, 1] (1 = ink).

  Strokes are drawn one after another, each OVER the image at pixel level as
  cairo does, so overlapping strokes add up where their edges are partial.
  Differentiable in `xy` and both opacities.

  Args:
    xy: float[S, P, 2] pixel coordinates (points past a stroke's length ignored).
    lens: int[S] points per stroke (0 = empty slot).
    settings: how to draw.
    stroke_opacity: optional float[S], default 1.
    segment_opacity: optional float[N] over the flat segments (see
      `polyline_segments`), default 1.
    num_segments: N, see `polyline_segments`.
    num_pairs: M, see `segment_ink` (`tile_pair_budget`).
  """
  segments = polyline_segments(xy, lens, num_segments)
  coverage = stroke_coverage(segment_ink(segments, settings, num_pairs), segments, lens.shape[0],
                             settings, segment_opacity)
  return composite(coverage, stroke_opacity)


def _power_of_two(n: int, least: int = 4) -> int:
  return max(least, 1 << max(n - 1, 0).bit_length())


def pad_batch(sketches: Sequence[Sequence[np.ndarray]]) -> tuple[np.ndarray, np.ndarray, int]:
  """Polylines of B sketches -> (xy float32[B, S, P, 2], lens int32[B, S], N segments),
  S, P and N rounded up to powers of two so that few shapes compile."""
  num_strokes = _power_of_two(max(len(s) for s in sketches))
  num_points = _power_of_two(max(len(p) for s in sketches for p in s))
  padded = [pad_strokes(s, num_strokes, num_points) for s in sketches]
  xy = np.stack([p[0] for p in padded])
  lens = np.stack([p[1] for p in padded])
  return xy, lens, _power_of_two(count_segments(lens))


@functools.partial(jax.jit, static_argnames=("settings", "num_segments", "num_pairs", "chunk"))
def rasterize_batch(xy: jax.Array, lens: jax.Array, *, settings: RasterSettings,
                    num_segments: int | None = None, num_pairs: int | None = None,
                    chunk: int = 8) -> jax.Array:
  """float[B, S, P, 2] pixel polylines, int[B, S] lengths -> float32[B, size, size] ink,
  `chunk` sketches at a time (bounds the memory of the segment ink)."""
  draw = lambda args: soft_rasterize(*args, settings, num_segments=num_segments,
                                     num_pairs=num_pairs)
  return jax.lax.map(draw, (xy, lens), batch_size=chunk)


def render_official(sketches: Sequence[Sequence[np.ndarray]], *,
                    settings: RasterSettings = OFFICIAL) -> np.ndarray:
  """Simplified QuickDraw drawings (strokes float[n, 2] in 0..255) as their official
  bitmaps -> float32[B, 28, 28] in [0, 1] (white ink on black, = official bitmap / 255)."""
  xy, lens, num_segments = pad_batch([official_pixels(s) for s in sketches])
  return np.asarray(rasterize_batch(xy, lens, settings=settings, num_segments=num_segments,
                                    num_pairs=tile_pair_budget(xy, lens, settings)))
