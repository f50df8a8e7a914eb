"""Stroke tokenisation: exact collate values, buckets, packing, truncation."""

import numpy as np
import pytest

from sketchjax.data import tokenize
from sketchjax.sketch.sketch import Sketch


def _two_stroke_sketch():
  return Sketch((np.array([[0.1, 0.2], [0.3, 0.2], [0.3, 0.5]]),
                 np.array([[-0.5, -0.5]])))


def test_collate_matches_hand_worked_values():
  batch = tokenize.tokenize_batch([_two_stroke_sketch()], [7],
                                  tokenize.TokenizerConfig(max_strokes=4, point_buckets=(4,)))
  assert batch["points"].shape == (1, 4, 4, 4)
  np.testing.assert_allclose(batch["points"][0, 0], [[0, 0, 1, 0], [0.2, 0, 1, 0],
                                                      [0, 0.3, 0, 1], [0, 0, 0, 0]], atol=1e-7)
  np.testing.assert_allclose(batch["points"][0, 1], [[0, 0, 0, 1]] + [[0] * 4] * 3)
  np.testing.assert_array_equal(batch["stroke_len"], [[3, 1, 0, 0]])
  np.testing.assert_allclose(batch["loc"][0], [[0.1, 0.2], [-0.5, -0.5], [0, 0], [0, 0]])
  np.testing.assert_array_equal(batch["label"], [7])
  np.testing.assert_array_equal(batch["weight"], [1.0])


def test_unbucketed_keeps_all_slots_and_bucketed_fits_the_batch():
  sketches = [_two_stroke_sketch()] * 4
  full = tokenize.tokenize_batch(sketches, [0] * 4, tokenize.TokenizerConfig())
  assert full["points"].shape == (4, 196, 16, 4)
  bucketed = tokenize.tokenize_batch(
      sketches, [0] * 4, tokenize.TokenizerConfig(stroke_buckets=(2, 8, 196)))
  assert bucketed["points"].shape == (4, 2, 16, 4)
  np.testing.assert_array_equal(bucketed["points"], full["points"][:, :2])


def test_packed_rows_hold_every_real_stroke_once_per_shard():
  sketches = [_two_stroke_sketch(), Sketch((np.zeros((2, 2)),)),
              Sketch((np.zeros((1, 2)),) * 3), _two_stroke_sketch()]
  config = tokenize.TokenizerConfig(num_shards=2, stroke_buckets=(4,), point_buckets=(4,),
                                    row_quantum=2)
  batch = tokenize.tokenize_batch(sketches, [0] * 4, config)
  points, index = batch["packed_points"], batch["packed_index"]
  assert points.shape == (2, 2, 4, 4) and index.shape == (2, 2, 4, 2)
  for d in range(2):
    real = index[d, ..., 0] < 2  # padding holds sketch index B / D = 2
    strokes = {tuple(i) for i in index[d][real]}
    expected = {(b, s) for b in range(2) for s in range(4)
                if batch["stroke_len"][2 * d + b, s] > 0}
    assert strokes == expected
    for b, s in expected:  # each stroke's points, contiguous and in order
      np.testing.assert_array_equal(
          points[d][(index[d, ..., 0] == b) & (index[d, ..., 1] == s)],
          batch["points"][2 * d + b, s, :batch["stroke_len"][2 * d + b, s]])
  # Shard 0: strokes of 3, 1 and 2 points fill one row of 4 and part of another.
  np.testing.assert_array_equal(index[0, 0, :, 0], [0, 0, 0, 0])
  with pytest.raises(ValueError, match="shards"):
    tokenize.tokenize_batch(sketches[:3], [0] * 3, tokenize.TokenizerConfig(num_shards=2))


def test_too_many_strokes_and_points_are_truncated_and_counted():
  many = Sketch(tuple(np.full((20, 2), i / 10.0) for i in range(10)))
  stats = tokenize.TokenizeStats()
  batch = tokenize.tokenize_batch([many], [0], tokenize.TokenizerConfig(
      max_strokes=6, point_buckets=(8, 16)), stats=stats)
  assert batch["points"].shape == (1, 6, 16, 4)
  assert batch["stroke_len"].max() == 16
  assert (stats.truncated_sketches, stats.dropped_strokes) == (1, 4)
  assert (stats.truncated_strokes, stats.dropped_points) == (6, 24)
  assert "4 strokes dropped" in stats.summary()
