"""Micro-batches inside one jitted step: gradient accumulation and evaluation.

A global batch of B sketches on D data shards splits into M micro-batches of
B / M, each still spread over all D shards, and `lax.scan` sums their
gradients: the same update as one pass over B (the loss is the mean of the
micro-batch means, equal to the batch mean for equal weights), with the
activation memory of B / M. On CPU the smaller working set is also faster
(SketchXAINet-Tiny at B = 100: M = 5 takes half the time and a quarter of the
memory of M = 1; WORKSPACE.md).

`unroll=True` writes the loop out (M copies of the step in the program). On XLA
CPU a convolution's weight gradient inside a while loop runs in a generic slow
path, 14-46x the time of the same gradient outside one (`benchmarks/
scan_convolution.py`; ZSE-SBIR's conv stem and patch embedding, MobileNetV2's
depthwise convs), and unrolled it does not; but XLA CPU then keeps about M
micro-batches' temporaries (ZSE-SBIR zse_small, M = 5: 2.08 GiB against 0.45;
the ViT-B step went past 24 GiB), which defeats the point of micro-batches, so
the loop stays rolled by default.

Batch layout: arrays [B, ...] are sketch-major; arrays named `packed_*` are
shard-major [D * M, ...] (the tokeniser packs each of the D * M consecutive
sketch chunks separately), so chunk (d, m) holds the packed strokes of
sketches [(d * M + m) * B / (D M), ...).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Batch = dict[str, Any]
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def split(batch: Batch, num_microbatches: int, num_shards: int) -> Batch:
  """Batch -> the same arrays with a leading micro-batch axis M.

  Micro-batch m takes, from every shard d, that shard's m-th chunk, so each
  micro-batch stays spread over all D shards (no data moves between devices).
  """
  m, d = num_microbatches, num_shards

  def one(name: str, x: jax.Array) -> jax.Array:
    if name.startswith("packed_"):  # [D * M, ...] -> [M, D, ...]
      x = x.reshape((d, m) + x.shape[1:])
      return jnp.swapaxes(x, 0, 1)
    per_chunk = x.shape[0] // (d * m)
    x = x.reshape((d, m, per_chunk) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1).reshape((m, d * per_chunk) + x.shape[3:])

  for name, x in batch.items():
    leading = x.shape[0]
    if leading % (d * m):
      raise ValueError(f"batch array {name!r} has {leading} rows, not divisible into "
                       f"{m} micro-batches on {d} shards")
  return {name: one(name, x) for name, x in batch.items()}


def value_and_grad(loss_fn: LossFn, params: Any, batch: Batch, rng: jax.Array, *,
                   num_microbatches: int, num_shards: int, unroll: bool = False):
  """((mean loss, mean metrics), summed-then-averaged grads) over micro-batches.

  With one micro-batch this is exactly `jax.value_and_grad(loss_fn, has_aux=True)`.
  Micro-batch m uses the dropout key fold_in(rng, m). unroll: the micro-batch
  loop written out (module doc: faster convolution gradients on CPU, ~M times the
  temporaries).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_microbatches == 1:
    return grad_fn(params, batch, rng)
  micro = split(batch, num_microbatches, num_shards)

  def body(carry, inputs):
    index, micro_batch = inputs
    (loss, metrics), grads = grad_fn(params, micro_batch, jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

  shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng)
  (loss, metrics), grads = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  (loss, metrics, grads), _ = jax.lax.scan(
      body, (loss, metrics, grads), (jnp.arange(num_microbatches), micro), unroll=unroll)
  scale = 1.0 / num_microbatches
  return ((loss * scale, jax.tree.map(lambda x: x * scale, metrics)),
          jax.tree.map(lambda g: g * scale, grads))


def summed(fn: Callable[[Batch], Any], batch: Batch, *, num_microbatches: int,
           num_shards: int) -> Any:
  """`fn(batch)` for an `fn` that returns sums over the batch (e.g. eval metrics),
  computed one micro-batch at a time and added up: the same sums, less memory."""
  if num_microbatches == 1:
    return fn(batch)
  per_micro = jax.lax.map(fn, split(batch, num_microbatches, num_shards))
  return jax.tree.map(lambda x: x.sum(axis=0), per_micro)


def concatenated(fn: Callable[[Batch], jax.Array], batch: Batch, *, num_microbatches: int,
                 num_shards: int) -> jax.Array:
  """`fn(batch)` for a per-example `fn` (e.g. logits [B, ...]), one micro-batch at
  a time, the outputs put back in batch order."""
  if num_microbatches == 1:
    return fn(batch)
  out = jax.lax.map(fn, split(batch, num_microbatches, num_shards))  # [M, D * b, ...]
  m, d = num_microbatches, num_shards
  out = out.reshape((m, d, -1) + out.shape[2:])
  return jnp.swapaxes(out, 0, 1).reshape((-1,) + out.shape[3:])
