"""Stroke tokenisation: normalised sketches to fixed-shape arrays (spec A.1, collate).

One batch of B sketches becomes a dict of arrays (S stroke slots, P points a
slot, D data shards of the batch):

  points       float32[B, S, P, 4]  per stroke rows (dx, dy, 1 - p, p); row 0
                                    has dx = dy = 0, rows past the stroke's
                                    length are zero (official collate).
  stroke_len   int32[B, S]          points of each slot's stroke, 0 = empty.
  loc          float32[B, S, 2]     absolute first point of each stroke.
  label        int32[B]
  weight       float32[B]           1 for real examples, 0 for batch padding.
  packed_points float32[D, R, L, 4] the same rows of the real strokes of each
                                    of the D consecutive shards of B / D
                                    sketches, laid back to back in R rows of
                                    L points (first-fit decreasing).
  packed_index int32[D, R, L, 2]    (sketch within shard, slot) of every
                                    packed point; padding points hold the
                                    out-of-range sketch index B / D.

The packed rows let the shape encoder run over real points only (a batch of
QuickDraw strokes averages ~8 points but reaches hundreds, so one padded row
a stroke wastes most of the work).
S is either fixed (`max_strokes`, the faithful 196) or the smallest of
`stroke_buckets` that holds the batch's longest sketch; P is the smallest of
`point_buckets` that holds its longest stroke; L is `max(point_buckets)` and R
is rounded up to a multiple of `row_quantum`. So XLA sees a handful of shapes,
never one per batch. Strokes past `max_strokes` and points past
`max(point_buckets)` are dropped (the official code keeps all points; at 512
no simplified QuickDraw stroke is cut) and counted in `TokenizeStats`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from absl import logging
import numpy as np

from sketchjax.sketch.sketch import Sketch


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """How sketches become arrays.

  Attributes:
    max_strokes: stroke slots of the model (196 in SketchXAINet); more strokes
      are dropped from the end of the drawing.
    stroke_buckets: slot counts to bucket a batch to, or None for always
      `max_strokes` (the official, unbucketed layout).
    point_buckets: points-per-stroke sizes; the largest is the cap.
    num_shards: D, the number of data shards of each batch (the local
      data-parallel devices) for the packed rows.
    row_quantum: the packed row count R is a multiple of this.
    slot_points: include `points` (one stroke a slot); models that read only
      the packed rows need not pay for it (nor compile a shape per P).
    bucket_packed_rows: pack the strokes in rows as long as the batch's point
      bucket P instead of the longest bucket: the same shape embeddings with
      fewer sequential BiLSTM steps (QuickDraw strokes rarely need 512; the
      faithful Tiny's BiLSTM on 20 sketches with P = 32 ran 5x less CPU time
      in training), at the cost of one more compiled row length per P. Ours.
  """

  max_strokes: int = 196
  stroke_buckets: tuple[int, ...] | None = None
  point_buckets: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
  num_shards: int = 1
  row_quantum: int = 4
  slot_points: bool = True
  bucket_packed_rows: bool = False


@dataclasses.dataclass
class TokenizeStats:
  """Counts of what tokenisation dropped (logged, never silent)."""

  sketches: int = 0
  truncated_sketches: int = 0
  dropped_strokes: int = 0
  truncated_strokes: int = 0
  dropped_points: int = 0

  def summary(self) -> str:
    return (f"{self.sketches} sketches: {self.truncated_sketches} had more strokes "
            f"than the slots ({self.dropped_strokes} strokes dropped); "
            f"{self.truncated_strokes} strokes cut ({self.dropped_points} points)")


def _bucket(value: int, buckets: Sequence[int]) -> int:
  """Smallest bucket >= value, or the largest bucket."""
  for b in sorted(buckets):
    if value <= b:
      return b
  return max(buckets)


def stroke_rows(stroke: np.ndarray) -> np.ndarray:
  """One stroke `float[n, 2]` to its shape rows `float32[n, 4]` (dx, dy, 1-p, p)."""
  rows = np.zeros((len(stroke), 4), np.float32)
  rows[1:, :2] = np.diff(stroke, axis=0)
  rows[:, 2] = 1.0
  rows[-1, 2:] = (0.0, 1.0)
  return rows


def tokenize_batch(sketches: Sequence[Sketch],
                   labels: Sequence[int],
                   config: TokenizerConfig,
                   *,
                   weights: Sequence[float] | None = None,
                   stats: TokenizeStats | None = None) -> dict[str, np.ndarray]:
  """Tokenises normalised sketches into the batch arrays described above.

  Args:
    sketches: B sketches (normalised coordinates), each with >= 1 stroke.
    labels: B class ids.
    config: slots, buckets and shards.
    weights: B example weights (default all 1).
    stats: counters of dropped strokes and points, updated in place.

  Returns:
    The batch dict; B must be divisible by `config.num_shards`.
  """
  batch_size = len(sketches)
  shards = config.num_shards
  if batch_size % shards:
    raise ValueError(f"batch of {batch_size} does not split into {shards} shards")
  stats = stats if stats is not None else TokenizeStats()
  max_points = max(config.point_buckets)

  kept = []
  for sketch in sketches:
    strokes = sketch.strokes
    stats.sketches += 1
    if len(strokes) > config.max_strokes:
      stats.truncated_sketches += 1
      stats.dropped_strokes += len(strokes) - config.max_strokes
      strokes = strokes[:config.max_strokes]
    for stroke in strokes:
      if len(stroke) > max_points:
        stats.truncated_strokes += 1
        stats.dropped_points += len(stroke) - max_points
    kept.append([s[:max_points] for s in strokes])

  longest_sketch = max(len(strokes) for strokes in kept)
  longest_stroke = max(len(s) for strokes in kept for s in strokes)
  num_slots = (config.max_strokes if config.stroke_buckets is None else
               min(config.max_strokes, _bucket(longest_sketch, config.stroke_buckets)))
  num_points = _bucket(longest_stroke, config.point_buckets)

  points = np.zeros((batch_size, num_slots, num_points, 4), np.float32)
  stroke_len = np.zeros((batch_size, num_slots), np.int32)
  loc = np.zeros((batch_size, num_slots, 2), np.float32)
  for b, strokes in enumerate(kept):
    for s, stroke in enumerate(strokes):
      points[b, s, :len(stroke)] = stroke_rows(stroke)
      stroke_len[b, s] = len(stroke)
      loc[b, s] = stroke[0]

  packed_points, packed_index = pack_strokes(points, stroke_len, num_shards=shards,
                                             row_length=(num_points if config.bucket_packed_rows
                                                         else max_points),
                                             row_quantum=config.row_quantum)
  batch = {
      "points": points,
      "stroke_len": stroke_len,
      "loc": loc,
      "label": np.asarray(labels, np.int32),
      "weight": (np.ones(batch_size, np.float32) if weights is None
                 else np.asarray(weights, np.float32)),
      "packed_points": packed_points,
      "packed_index": packed_index,
  }
  if not config.slot_points:
    del batch["points"]
  return batch


def pack_strokes(points: np.ndarray, stroke_len: np.ndarray, *, num_shards: int,
                 row_length: int, row_quantum: int = 4) -> tuple[np.ndarray, np.ndarray]:
  """Lays the real strokes of each batch shard back to back in rows.

  Args:
    points: float32[B, S, P, 4] one stroke a slot.
    stroke_len: int[B, S].
    num_shards: D; shard d holds sketches [d * B / D, (d + 1) * B / D).
    row_length: L >= P.
    row_quantum: R is rounded up to a multiple of this.

  Returns:
    packed_points float32[D, R, L, 4] and packed_index int32[D, R, L, 2]
    ((sketch within shard, slot) of each point; padding has sketch B / D).
  """
  per_shard = len(stroke_len) // num_shards
  shard_rows = [_pack_rows(stroke_len[d * per_shard:(d + 1) * per_shard], row_length)
                for d in range(num_shards)]
  num_rows = row_quantum * math.ceil(max(len(rows) for rows in shard_rows) / row_quantum)
  packed_points = np.zeros((num_shards, num_rows, row_length, 4), np.float32)
  packed_index = np.zeros((num_shards, num_rows, row_length, 2), np.int32)
  packed_index[..., 0] = per_shard
  for d, rows in enumerate(shard_rows):
    for r, row in enumerate(rows):
      t = 0
      for b, s in row:
        n = stroke_len[d * per_shard + b, s]
        packed_points[d, r, t:t + n] = points[d * per_shard + b, s, :n]
        packed_index[d, r, t:t + n] = (b, s)
        t += n
  return packed_points, packed_index


def _pack_rows(stroke_len: np.ndarray, row_length: int) -> list[list[tuple[int, int]]]:
  """First-fit decreasing packing of the strokes of int[B, S] lengths into rows.

  Returns rows of (sketch, slot) in the order their points are laid out.
  """
  strokes = sorted(((int(stroke_len[b, s]), b, s) for b, s in np.argwhere(stroke_len > 0)),
                   key=lambda x: -x[0])
  rows, free = [], []
  for length, b, s in strokes:
    for r, room in enumerate(free):
      if length <= room:
        break
    else:
      r = len(rows)
      rows.append([])
      free.append(row_length)
    rows[r].append((b, s))
    free[r] -= length
  return rows


def log_stats(stats: TokenizeStats, what: str) -> None:
  """Logs the counters, as a warning when anything was dropped."""
  dropped = stats.dropped_strokes or stats.dropped_points
  (logging.warning if dropped else logging.info)("%s tokenisation: %s", what,
                                                 stats.summary())
