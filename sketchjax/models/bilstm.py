"""Stroke shape encoder: a stacked bidirectional LSTM over point offsets (spec A.2.1).

Strokes run either one a row ([N, P, 4] with lengths) or packed back to back
in rows ([R, L, 4] with a stroke id per point): the state is reset to zero at
every stroke's first point in each direction, so both layouts give exactly
what PyTorch's `pack_padded_sequence` gives, but packed rows do no work on
padding (a batch of QuickDraw strokes is ~8 points on average and up to
hundreds, so per-stroke padding wastes most of the scan). Both directions of a
layer run in ONE `lax.scan`, each step's two matmuls batched over the
direction axis.

Parameters per layer (PyTorch gate order i, f, g, o, so weights port as
transposes): `input_kernel[2, F, 4h]` (= W_ih^T of forward, reverse),
`recurrent_kernel[2, h, 4h]` (= W_hh^T) and ONE `bias[2, 4h]` per direction
(= b_ih + b_hh: PyTorch keeps two bias vectors that only ever appear summed,
so a converted model is exact and has 4h fewer parameters a direction and layer).
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp


def pytorch_lstm_init(hidden: int) -> nn.initializers.Initializer:
  """PyTorch's LSTM default: U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight."""
  bound = 1.0 / hidden**0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class BiLSTMLayer(nn.Module):
  """One bidirectional LSTM layer over rows of back-to-back segments.

  A row may hold several sequences (strokes) one after another: `segment_ids`
  names the sequence of every step, and both directions start from a zero
  state at each sequence's first step in their own direction, so every
  sequence is processed exactly as if it were alone (as PyTorch's
  `pack_padded_sequence` does). Steps with a negative id are padding.

  Attributes:
    hidden: units of each direction (h); the output has 2h features.
    dtype: compute dtype (parameters stay float32).
  """

  hidden: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, segment_ids: jax.Array, shards: int = 1) -> jax.Array:
    """[T, N, F] time-major inputs, int[T, N] segment ids -> [T, N, 2h] (forward ++ backward).

    Outputs at padding steps (id < 0) are 0. `shards` (dividing N): the rows are that
    many equal groups, one a data shard (the packed rows of sketchxainet); each group
    steps with its own broadcast copy of the weights, so under SPMD the weight
    gradients accumulate on each device through the scan and are summed once after
    it, instead of an all-reduce at every time step (a collective per step of a
    64-step scan made a 2-process CPU run ~50x slower). The same values as shards=1.
    """
    h = self.hidden
    steps, rows = segment_ids.shape
    if rows % shards:
      raise ValueError(f"BiLSTMLayer: {shards} shards do not divide the {rows} rows")
    init = pytorch_lstm_init(h)
    w_in = self.param("input_kernel", init, (2, x.shape[-1], 4 * h))
    w_rec = self.param("recurrent_kernel", init, (2, h, 4 * h))
    bias = self.param("bias", init, (2, 4 * h))
    w_in, w_rec, bias = (jnp.broadcast_to(a.astype(self.dtype)[:, None], (2, shards) + a.shape[1:])
                         for a in (w_in, w_rec, bias))  # [2, S, ...] a copy a shard

    x = x.astype(self.dtype)
    changed = segment_ids[1:] != segment_ids[:-1]  # [T-1, N]
    first = jnp.ones_like(segment_ids[:1], bool)
    starts_forward = jnp.concatenate([first, changed], axis=0)
    starts_backward = jnp.concatenate([changed, first], axis=0)[::-1]
    both = jnp.stack([x, x[::-1]], axis=1).reshape(steps, 2, shards, rows // shards, -1)
    resets = jnp.stack([starts_forward, starts_backward], axis=1).reshape(
        steps, 2, shards, rows // shards)  # [T, 2, S, N/S]

    def step(carry, inputs):
      x_t, reset_t = inputs
      h_prev, c_prev = (jnp.where(reset_t[..., None], 0, a) for a in carry)
      gates = (jnp.einsum("dsnf,dsfg->dsng", x_t, w_in) + bias[:, :, None, :]
               + jnp.einsum("dsnh,dshg->dsng", h_prev, w_rec))
      i, f, g, o = jnp.split(gates, 4, axis=-1)
      c = nn.sigmoid(f) * c_prev + nn.sigmoid(i) * jnp.tanh(g)
      h_new = nn.sigmoid(o) * jnp.tanh(c)
      return (h_new, c), h_new

    zeros = jnp.zeros((2, shards, rows // shards, h), self.dtype)
    _, out = jax.lax.scan(step, (zeros, zeros), (both, resets))  # [T, 2, S, N/S, h]
    out = out.reshape(steps, 2, rows, h)
    out = jnp.concatenate([out[:, 0], out[::-1, 1]], axis=-1)
    return jnp.where((segment_ids >= 0)[..., None], out, 0)


class StrokeShapeEncoder(nn.Module):
  """Stacked BiLSTM over each stroke's (dx, dy, 1-p, p) rows, reduced over time.

  Attributes:
    hidden: output size H (each direction has H/2 units, as in the official model).
    num_layers: stacked bidirectional layers (2 officially).
    reduce: "sum" (official) or "mean" of the top-layer outputs over valid steps.
    dtype: compute dtype.
  """

  hidden: int
  num_layers: int = 2
  reduce: Literal["sum", "mean"] = "sum"
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.hidden % 2:
      raise ValueError(f"StrokeShapeEncoder.hidden must be even, got {self.hidden}")
    if self.reduce not in ("sum", "mean"):
      raise ValueError(f"StrokeShapeEncoder.reduce must be 'sum' or 'mean', got {self.reduce!r}")
    self.layers = [BiLSTMLayer(self.hidden // 2, dtype=self.dtype, name=f"layer_{i}")
                   for i in range(self.num_layers)]

  def __call__(self, points: jax.Array, lengths: jax.Array) -> jax.Array:
    """float[N, P, 4] one stroke a row, int[N] lengths -> float32[N, H] (length 0 gives 0)."""
    steps = jnp.arange(points.shape[1])[None, :]
    ids = jnp.where(steps < lengths[:, None], jnp.arange(points.shape[0])[:, None], -1)
    return reduce_by_stroke(self.point_outputs(points, ids), ids, points.shape[0], self.reduce)

  def point_outputs(self, points: jax.Array, segment_ids: jax.Array, shards: int = 1
                    ) -> jax.Array:
    """Top-layer outputs of rows of back-to-back strokes.

    Args:
      points: float[R, L, 4] rows, each holding whole strokes one after another.
      segment_ids: int[R, L] stroke of every point (any ids that differ between
        neighbouring strokes), negative for padding.
      shards: the rows are this many equal groups, one a data shard (BiLSTMLayer).

    Returns:
      float32[R, L, H], 0 at padding.
    """
    ids = segment_ids.T  # time-major [L, R]
    x = jnp.swapaxes(points, 0, 1)
    for layer in self.layers:
      x = layer(x, ids, shards)
    return jnp.swapaxes(x, 0, 1).astype(jnp.float32)


def reduce_by_stroke(outputs: jax.Array, segment_ids: jax.Array, num_strokes: int,
                     reduce: str = "sum") -> jax.Array:
  """Per-point outputs float[R, L, H] -> float32[num_strokes, H] by stroke id.

  Ids outside [0, num_strokes) are dropped; a stroke with no points gives 0.
  """
  flat_ids = segment_ids.reshape(-1)
  flat_ids = jnp.where((flat_ids >= 0) & (flat_ids < num_strokes), flat_ids, num_strokes)
  total = jax.ops.segment_sum(outputs.reshape(flat_ids.shape[0], -1), flat_ids,
                              num_segments=num_strokes + 1)[:num_strokes]
  if reduce == "mean":
    counts = jax.ops.segment_sum(jnp.ones_like(flat_ids), flat_ids,
                                 num_segments=num_strokes + 1)[:num_strokes]
    total = total / jnp.maximum(counts, 1)[:, None].astype(total.dtype)
  return total
