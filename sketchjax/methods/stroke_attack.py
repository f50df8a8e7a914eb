"""Stroke-level adversarial attacks on a sketch classifier: the least ink that flips its prediction.

Three attacks on one sketch, pure functions (callers `vmap` / `lax.map` over sketches):
  removal   remove units (whole strokes, or segments = partial strokes) in a given
            order until the predicted class changes (`removal_attack`); the order
            comes from an attribution (SLA for strokes, P-SLA for segments) or a
            baseline (random, drawing order, shortest first). The prefixes are
            evaluated `chunk` at a time in a `lax.while_loop` that stops at the
            first flip; at least one unit always stays (a blank canvas is no attack);
  PGD       projected gradient ascent of the margin (best other logit - target
            logit) over point displacements through the soft rasteriser, every
            point within a disc of radius r (`pgd_points`, a `lax.scan`); stops
            moving at the first flip;
  random    the same budget spent on random displacements of every point to the
            edge of its disc, as many draws as PGD has steps (`random_displacement`).
Costs: the share of ink length removed (segment lengths, a dot counting one line
width: `ink_lengths`), strokes touched, point displacement (pixels here; the task
converts to canvas units).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sketchjax.data import soft_rasterize as sr
from sketchjax.methods import unit_vectors

LogitsOfKeep = Callable[[jax.Array], jax.Array]  # float[K] keep mask -> logits float[C]
Margin = Callable[[jax.Array], jax.Array]  # xy float[S, P, 2] -> scalar, > 0 = flipped


def ink_lengths(segments: sr.Segments, dot_length: float) -> jax.Array:
  """float32[N] ink length of each flat segment in pixels: its length, `dot_length` (the line
  width) for a one-point stroke's zero-length segment, 0 for padding rows."""
  length = jnp.linalg.norm(segments.b - segments.a, axis=-1)
  return jnp.where(segments.valid, jnp.where(length > 0, length, dot_length), 0.0)


def shortest_first(lengths: jax.Array, present: jax.Array) -> jax.Array:
  """int32[K] order: real units by increasing length float[K] (ties in drawing order)."""
  return jnp.argsort(jnp.where(present, lengths, jnp.inf), stable=True).astype(jnp.int32)


def removal_attack(logits_of_keep: LogitsOfKeep, order: jax.Array, present: jax.Array,
                   cost: jax.Array, target: jax.Array, *, chunk: int = 8) -> dict[str, jax.Array]:
  """Removes the units of `order` one by one until the prediction is no longer `target`.

  Args:
    logits_of_keep: keep mask float[K] (1 = drawn) -> logits float[C].
    order: int32[K] the units to remove first come first; real units before
      padding (e.g. `faithfulness.ranking`).
    present: bool[K] real units (n of them).
    cost: float[K] >= 0, each unit's ink.
    target: int32 scalar, the class to move away from (the prediction).
    chunk: prefixes evaluated at once.

  Returns:
    success: bool, a prefix of 1..n-1 units flips the prediction;
    removed: int32, units removed at the first flip (0 on failure);
    removed_mask: bool[K] those units;
    cost_share: float32, their cost over the cost of all units (0 on failure);
    prediction: int32, the class predicted after the removal (`target` on failure).
  """
  size = order.shape[0]
  n = present.sum()
  rank = jnp.zeros(size, jnp.int32).at[order].set(jnp.arange(size, dtype=jnp.int32))

  def predictions(k):  # int32[chunk] prefix lengths -> predicted class of each
    keep = present[None, :] & (rank[None, :] >= k[:, None])
    return jax.vmap(lambda m: jnp.argmax(logits_of_keep(m.astype(jnp.float32))))(keep)

  def cond(state):
    start, found, _, _ = state
    return ~found & (start < n)

  def body(state):
    start, _, _, _ = state
    k = start + jnp.arange(chunk)
    predicted = predictions(k)
    flips = (predicted != target) & (k < n)
    first = jnp.argmax(flips)
    return start + chunk, flips.any(), k[first], predicted[first].astype(jnp.int32)

  init = (jnp.int32(1), jnp.bool_(False), jnp.int32(0), jnp.asarray(target, jnp.int32))
  _, success, removed, prediction = jax.lax.while_loop(cond, body, init)
  removed = jnp.where(success, removed, 0)
  removed_mask = present & (rank < removed)
  total = jnp.sum(jnp.where(present, cost, 0.0))
  return {"success": success, "removed": removed, "removed_mask": removed_mask,
          "cost_share": jnp.sum(jnp.where(removed_mask, cost, 0.0)) / jnp.maximum(total, 1e-12),
          "prediction": jnp.where(success, prediction, target)}


def real_points(lens: jax.Array, num_points: int) -> jax.Array:
  """bool[S, P]: the points of int[S] stroke lengths (P slots a stroke)."""
  return jnp.arange(num_points)[None, :] < lens[:, None]


def project(delta: jax.Array, radius: jax.Array, real: jax.Array) -> jax.Array:
  """Displacements float[S, P, 2] with every point's moved into the disc of `radius`, padding
  points' set to 0 (`real` bool[S, P])."""
  norm = jnp.linalg.norm(delta, axis=-1, keepdims=True)
  scale = jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-12))
  return jnp.where(real[..., None], delta * scale, 0.0)


def pgd_points(margin: Margin, xy: jax.Array, lens: jax.Array, radius: jax.Array, *,
               steps: int, step_size: jax.Array) -> dict[str, jax.Array]:
  """Projected gradient ascent of `margin` over point displacements, each point within `radius`.

  Each step moves every point by `step_size` along its own normalised gradient,
  then projects (`project`); the first iterate with margin > 0 is frozen and
  returned.

  Args:
    margin: xy float[S, P, 2] -> scalar, > 0 once the prediction has changed.
    xy: float[S, P, 2] pixel polylines; lens: int[S].
    radius, step_size: float32 scalars, pixels.
    steps: gradient steps (a `lax.scan`); the margin is evaluated steps + 1 times.

  Returns:
    success: bool; delta: float32[S, P, 2], the adversarial displacement (the
    last iterate on failure); margin: float32 at delta.
  """
  real = real_points(lens, xy.shape[1])
  value_and_grad = jax.value_and_grad(margin)

  def step(carry, _):
    delta, found = carry
    value, grad = value_and_grad(xy + delta)
    found = found | (value > 0)
    direction = unit_vectors.unit(grad)
    moved = project(delta + step_size * direction, radius, real)
    return (jnp.where(found, delta, moved), found), None

  (delta, _), _ = jax.lax.scan(step, (jnp.zeros_like(xy), jnp.bool_(False)), None, length=steps)
  last = margin(xy + delta)  # a found delta was frozen, so its margin is still > 0
  return {"success": last > 0, "delta": delta, "margin": last}


def random_displacement(margin: Margin, xy: jax.Array, lens: jax.Array, radius: jax.Array,
                        key: jax.Array, *, draws: int) -> dict[str, jax.Array]:
  """The baseline of `pgd_points`: `draws` sketches with every point moved by `radius` in a
  random direction; success when any of them flips (success: bool, delta: float32[S, P, 2]
  of the first that does, else of the last draw)."""
  real = real_points(lens, xy.shape[1])
  angles = jax.random.uniform(key, (draws, *xy.shape[:2]), maxval=2 * jnp.pi)
  deltas = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1) * real[None, ..., None]
  flipped = jax.vmap(lambda d: margin(xy + d) > 0)(deltas)
  chosen = jnp.where(flipped.any(), jnp.argmax(flipped), draws - 1)
  return {"success": flipped.any(), "delta": deltas[chosen]}


def displacement_stats(delta: jax.Array, lens: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean, max) length of the real points' displacements float[S, P, 2], in their units."""
  real = real_points(lens, delta.shape[1])
  norm = jnp.where(real, jnp.linalg.norm(delta, axis=-1), 0.0)
  return norm.sum() / jnp.maximum(real.sum(), 1), norm.max()


def logit_margin(logits: jax.Array, target: jax.Array) -> jax.Array:
  """max over classes c != target of logits[c], minus logits[target] (> 0: not predicted)."""
  others = jnp.where(jnp.arange(logits.shape[0]) == target, -jnp.inf, logits)
  return others.max() - logits[target]


def displacement_attacks(logits_of_xy: Callable[[jax.Array], jax.Array], xy: jax.Array,
                         lens: jax.Array, radii: jax.Array, prediction: jax.Array,
                         key: jax.Array, *, steps: int, step_fraction: float
                         ) -> dict[str, jax.Array]:
  """PGD at each radius float[R] and its random-displacement baseline on a model given as
  moved points float[S, P, 2] -> logits float[C] (through a rasteriser or a tokeniser).

  Returns pgd/{success, prediction, margin, mean_shift, max_shift}: [R] (shifts in the
  units of xy), pgd/delta: float[R, S, P, 2], random/success: bool[R].
  """
  margin = lambda moved: logit_margin(logits_of_xy(moved), prediction)  # noqa: E731
  pgd = jax.vmap(lambda r: pgd_points(margin, xy, lens, r, steps=steps,
                                      step_size=step_fraction * r))(radii)
  shifts = jax.vmap(lambda d: displacement_stats(d, lens))(pgd["delta"])
  moved = jax.vmap(lambda d: jnp.argmax(logits_of_xy(xy + d)))(pgd["delta"])
  random = jax.vmap(lambda r, k: random_displacement(margin, xy, lens, r, k,
                                                     draws=steps)["success"])(
      radii, jax.random.split(key, radii.shape[0]))
  return {"pgd/success": pgd["success"], "pgd/delta": pgd["delta"],
          "pgd/prediction": moved.astype(jnp.int32), "pgd/margin": pgd["margin"],
          "pgd/mean_shift": shifts[0], "pgd/max_shift": shifts[1], "random/success": random}
