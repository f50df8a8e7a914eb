"""Noisy-stroke filtering for assisted drawing: drop the strokes that work against a class.

A stroke works against class c when its attribution for c (e.g. SLA, the IG of
c's logit over stroke opacities) is negative. `filter_masks` gives the keep
masks of that filter and of two baselines that drop as many strokes without
looking at the model: at random, and the shortest first. At least one stroke is
always kept (when every stroke scores below 0, the best one stays).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sketchjax.methods import faithfulness, stroke_attack

FILTERS = ("attribution", "random", "shortest")


def against_class(attribution: jax.Array, present: jax.Array) -> jax.Array:
  """bool[S]: the real strokes with attribution float[S] < 0, all but the best when all are."""
  against = present & (attribution < 0)
  best = jnp.argmax(jnp.where(present, attribution, -jnp.inf))
  everything = against.sum() == present.sum()
  return against & ~(everything & (jnp.arange(present.shape[0]) == best))


def drop_first(order: jax.Array, count: jax.Array) -> jax.Array:
  """bool[S] keep mask without the first `count` slots of `order` int32[S] (real first)."""
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
  return rank >= count


def filter_masks(attribution: jax.Array, lengths: jax.Array, present: jax.Array,
                 key: jax.Array) -> dict[str, jax.Array]:
  """Keep masks bool[S] of each filter of `FILTERS`, all dropping the same number of strokes.

  Args:
    attribution: float[S] per-stroke attribution for the sketch's class.
    lengths: float[S] ink length of each stroke (any unit).
    present: bool[S] real strokes.
    key: for the random baseline.
  """
  dropped = against_class(attribution, present)
  count = dropped.sum()
  return {
      "attribution": present & ~dropped,
      "random": present & drop_first(faithfulness.random_order(key, present), count),
      "shortest": present & drop_first(stroke_attack.shortest_first(lengths, present), count),
  }


def filter_results(logits_of_keep: Callable[[jax.Array], jax.Array], attribution: jax.Array,
                   lengths: jax.Array, present: jax.Array, label: jax.Array,
                   key: jax.Array) -> dict[str, jax.Array]:
  """Each filter of `FILTERS` applied to a sketch and the model's prediction after it.

  Args:
    logits_of_keep: keep mask float[S] -> logits float[C].
    attribution, lengths, present, key: as `filter_masks`; label: int32 true class.

  Returns filter/keep: bool[F, S], filter/prediction: int32[F], filter/correct: bool[F],
  filter/dropped: int32 strokes each filter drops.
  """
  masks = filter_masks(attribution, lengths, present, key)
  keep = jnp.stack([masks[name] for name in FILTERS])
  filtered = jax.vmap(lambda k: jnp.argmax(logits_of_keep(k.astype(jnp.float32))))(keep)
  return {"filter/keep": keep, "filter/prediction": filtered.astype(jnp.int32),
          "filter/correct": filtered == label, "filter/dropped": present.sum() - keep[0].sum()}
