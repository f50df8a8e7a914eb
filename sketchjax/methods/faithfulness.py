"""Deletion and insertion curves over strokes, and their areas (faithfulness of attributions).

For one sketch with n real strokes and an order of them (most important
first):
  deletion curve   F with the first k strokes of the order removed, k = 0..n
                   (a faithful order makes it fall fast: low area is good);
  insertion curve  F with only the first k strokes of the order drawn, k = 0..n
                   (starts from the blank sketch; high area is good).
The area is the trapezoid rule over the fraction of strokes k / n in [0, 1], so
sketches with different stroke counts average fairly. Orders to compare
against: a random order and the drawing order. F is any score of a keep mask
(1 = stroke drawn), e.g. the target-class probability; all k of a curve are
evaluated at once with `vmap`. Arrays have S slots; slots past n are padding.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

ScoreKeep = Callable[[jax.Array], jax.Array]  # float[S] keep mask -> scalar


def ranking(values: jax.Array, present: jax.Array) -> jax.Array:
  """Slots by decreasing `values` float[S], real strokes first -> int32[S] order."""
  return jnp.argsort(jnp.where(present, -values, jnp.inf), stable=True).astype(jnp.int32)


def drawing_order(present: jax.Array) -> jax.Array:
  """Real strokes in the order they were drawn -> int32[S]."""
  return ranking(-jnp.arange(present.shape[0], dtype=jnp.float32), present)


def random_order(key: jax.Array, present: jax.Array) -> jax.Array:
  """A uniformly random order of the real strokes -> int32[S]."""
  return ranking(jax.random.uniform(key, present.shape), present)


def curves(score_keep: ScoreKeep, order: jax.Array,
           present: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(deletion, insertion) float32[S + 1]: F after removing / keeping the first k strokes of
  `order`, k = 0..S (values past k = n repeat the last one)."""
  slots = present.shape[0]
  rank = jnp.zeros(slots, jnp.int32).at[order].set(jnp.arange(slots, dtype=jnp.int32))
  k = jnp.arange(slots + 1)[:, None]
  deleted = present & (rank[None, :] >= k)
  inserted = present & (rank[None, :] < k)
  masks = jnp.concatenate([deleted, inserted]).astype(jnp.float32)
  scores = jax.vmap(score_keep)(masks)
  return scores[:slots + 1], scores[slots + 1:]


def area(curve: jax.Array, num_strokes: jax.Array) -> jax.Array:
  """Trapezoid area of curve[0..n] over k / n in [0, 1] (float32 scalar; 0 when n = 0)."""
  n = jnp.maximum(num_strokes, 1).astype(jnp.float32)
  pairs = (curve[:-1] + curve[1:]) / 2
  used = jnp.arange(pairs.shape[0]) < num_strokes
  return jnp.sum(jnp.where(used, pairs, 0.0)) / n
