"""Tests of the hard JAX rasteriser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.data.rasterize import absolute_points, rasterize, rasterize_polylines

SIZE = 32


def _centre(pixel: int, size: int = SIZE) -> float:
  """Coordinate in [-1, 1] of a pixel centre."""
  return (pixel + 0.5) / size * 2 - 1


def _batch(polylines, slots=4, num_points=8):
  """Absolute polylines of one sketch -> tokenised arrays with a batch axis of 1."""
  points = np.zeros((1, slots, num_points, 4), np.float32)
  stroke_len = np.zeros((1, slots), np.int32)
  loc = np.zeros((1, slots, 2), np.float32)
  for s, line in enumerate(polylines):
    line = np.asarray(line, np.float32)
    points[0, s, 1:len(line), :2] = np.diff(line, axis=0)
    points[0, s, :len(line), 2] = 1
    stroke_len[0, s] = len(line)
    loc[0, s] = line[0]
  return points, stroke_len, loc


def _draw(polylines, line_width=1, **kwargs):
  return np.asarray(rasterize(*_batch(polylines), size=SIZE, line_width=line_width, **kwargs)[0])


def test_horizontal_line_lights_its_row():
  y = _centre(10)
  image = _draw([[(_centre(4), y), (_centre(20), y)]])
  np.testing.assert_array_equal(np.nonzero(image.any(axis=1))[0], [10])
  np.testing.assert_array_equal(np.nonzero(image[10])[0], np.arange(4, 21))


def test_vertical_line_lights_its_column():
  x = _centre(7)
  image = _draw([[(x, _centre(3)), (x, _centre(25))]])
  np.testing.assert_array_equal(np.nonzero(image.any(axis=0))[0], [7])
  np.testing.assert_array_equal(np.nonzero(image[:, 7])[0], np.arange(3, 26))


def test_polyline_is_connected_and_dots_are_drawn():
  image = _draw([[(-0.9, -0.9), (0.8, 0.3), (-0.2, 0.9)], [(_centre(30), _centre(1))]])
  assert image[1, 30] == 1  # a one-point stroke is a dot
  rows, cols = np.nonzero(image[:, :29])
  assert set(range(cols.min(), cols.max() + 1)) <= set(cols)  # no gap along x
  assert set(range(rows.min(), rows.max() + 1)) <= set(rows)


def test_line_width_thickens():
  y = _centre(10)
  line = [[(_centre(4), y), (_centre(20), y)]]
  np.testing.assert_array_equal(np.nonzero(_draw(line, line_width=3).any(axis=1))[0], [9, 10, 11])
  with pytest.raises(ValueError, match="line_width"):
    _draw(line, line_width=0)


def test_empty_slots_draw_nothing_and_output_is_binary():
  points, stroke_len, loc = _batch([[(-0.5, -0.5), (0.5, 0.4)]])
  points[0, 1:] = np.random.default_rng(0).normal(size=points[0, 1:].shape)  # junk in empty slots
  loc[0, 1:] = 0.3
  image = np.asarray(rasterize(points, stroke_len, loc, size=SIZE, line_width=2))
  clean = np.asarray(rasterize(*_batch([[(-0.5, -0.5), (0.5, 0.4)]]), size=SIZE, line_width=2))
  np.testing.assert_array_equal(image, clean)
  assert image.dtype == np.float32 and image.shape == (1, SIZE, SIZE)
  assert set(np.unique(image)) == {0.0, 1.0}
  blank = rasterize(points, np.zeros_like(stroke_len), loc, size=SIZE)
  np.testing.assert_array_equal(blank, 0.0)


def test_points_outside_the_canvas_are_clipped():
  image = _draw([[(-3.0, _centre(5)), (3.0, _centre(5))]])
  np.testing.assert_array_equal(image[5], 1.0)
  assert image.sum() == SIZE


def test_sparse_budget_still_draws_every_vertex():
  vertices = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
  image = _draw([vertices], samples=4)
  for x, y in vertices:
    col, row = (np.array([x, y]) + 1) * SIZE / 2 - 0.5
    assert image[int(round(row)), int(round(col))] == 1


def test_jit_and_vmap_agree_with_the_batch_function():
  rng = np.random.default_rng(1)
  points = np.zeros((3, 4, 6, 4), np.float32)
  points[..., 1:, :2] = rng.normal(0, 0.2, (3, 4, 5, 2))
  stroke_len = rng.integers(0, 7, (3, 4)).astype(np.int32)
  loc = rng.uniform(-0.6, 0.6, (3, 4, 2)).astype(np.float32)
  batched = jax.jit(lambda p, n, l: rasterize(p, n, l, size=SIZE))(points, stroke_len, loc)
  xy = absolute_points(jnp.asarray(points), jnp.asarray(loc))
  per_sketch = jax.jit(jax.vmap(lambda x, n: rasterize_polylines(x, n, size=SIZE)))(xy, stroke_len)
  np.testing.assert_array_equal(batched, per_sketch)
  assert batched.shape == (3, SIZE, SIZE)
  assert float(batched.min()) >= 0.0 and float(batched.max()) <= 1.0
