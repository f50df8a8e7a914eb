"""Losses of the data-dependent SBIR baseline: triplet and symmetric InfoNCE.

Both take L2-normalised sketch and photo embeddings of one global batch, row i
of each being a training pair (a sketch and its photo, or a photo of its class).

- `triplet_loss`: ZSE-SBIR's `nn.TripletMarginLoss(margin, p=2)` (spec 3.5):
  mean over anchors of max(0, d(s, p+) - d(s, p-) + margin), d the Euclidean
  distance with torch's 1e-6 added to the difference. The anchor is the sketch,
  the positive its pair's photo, the negative a photo of another class drawn at
  random from the batch (ZSE-SBIR samples it from the data set instead; with a
  batch of several classes the two are the same distribution).
- `info_nce_loss`: symmetric InfoNCE (CLIP's): sketch-to-photo and
  photo-to-sketch cross-entropy over the global batch, the pair's partner the
  positive and every other row a negative. `sharded_info_nce_loss` computes the
  same under `jax.shard_map`: each device scores its own rows against the
  embeddings all-gathered from every device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

TORCH_PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance adds it to a - b


def _pair_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """[B, D], [B, D] -> [B]: ||a - b + eps||_2, as torch's pairwise_distance."""
  return jnp.sqrt(jnp.sum(jnp.square(a - b + TORCH_PAIRWISE_EPS), axis=-1))


def random_negatives(labels: jax.Array, rng: jax.Array) -> jax.Array:
  """[B] int labels -> [B] index of a uniformly drawn row of another class
  (the row itself when the whole batch has one class)."""
  other = labels[:, None] != labels[None, :]
  noise = jax.random.uniform(rng, other.shape)
  choice = jnp.argmax(jnp.where(other, noise, -1.0), axis=1)
  return jnp.where(other.any(axis=1), choice, jnp.arange(labels.shape[0]))


def triplet_margin_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array,
                        margin: float = 1.0) -> jax.Array:
  """torch's TripletMarginLoss(margin, p=2), mean: [B, D] each."""
  return jnp.mean(jax.nn.relu(_pair_distance(anchor, positive) -
                              _pair_distance(anchor, negative) + margin))


def triplet_loss(sketch: jax.Array, photo: jax.Array, labels: jax.Array, rng: jax.Array,
                 margin: float = 1.0) -> jax.Array:
  """Mean triplet margin loss, a random photo of another class as each sketch's
  negative; sketch, photo [B, D], labels [B]."""
  return triplet_margin_loss(sketch, photo, photo[random_negatives(labels, rng)], margin)


def zse_sbir_loss(logits: jax.Array, anchor: jax.Array, positive: jax.Array,
                  negative: jax.Array, margin: float = 1.0) -> tuple[jax.Array, dict]:
  """ZSE-SBIR's 2 L_triplet + 4 L_rn (spec 3.5): RN logits [2B] of B positive
  then B negative pairs, against targets 0.99 / 0.01 (MSE of the sigmoid);
  triplet on the CA [Ret] tokens [B, D] (un-normalised): r(s | p+), r(p+ | s),
  r(p- | s-). Returns (loss, {"triplet", "rn_mse"})."""
  half = logits.shape[0] // 2
  targets = jnp.concatenate([jnp.full(half, 0.99), jnp.full(half, 0.01)])
  rn = jnp.mean(jnp.square(jax.nn.sigmoid(logits) - targets))
  triplet = triplet_margin_loss(anchor, positive, negative, margin)
  return 2.0 * triplet + 4.0 * rn, {"triplet": triplet, "rn_mse": rn}


def _cross_entropy_rows(logits: jax.Array, targets: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


def info_nce_loss(sketch: jax.Array, photo: jax.Array, temperature: float) -> jax.Array:
  """Symmetric InfoNCE over the batch; sketch, photo [B, D] unit vectors."""
  logits = sketch @ photo.T / temperature  # [B sketches, B photos]
  targets = jnp.arange(sketch.shape[0])
  return 0.5 * (jnp.mean(_cross_entropy_rows(logits, targets)) +
                jnp.mean(_cross_entropy_rows(logits.T, targets)))


def sharded_info_nce_loss(sketch: jax.Array, photo: jax.Array, temperature: float,
                          mesh: Mesh) -> jax.Array:
  """`info_nce_loss` with the batch split over every axis of `mesh` (as the
  trainer splits it): each device
  all-gathers both modalities, scores its own rows against every row of the
  global batch and the per-device means are averaged (`pmean`). Equal to
  `info_nce_loss` on the global batch; gradients flow through the gather."""

  axis = tuple(mesh.axis_names)

  def per_device(local_sketch: jax.Array, local_photo: jax.Array) -> jax.Array:
    all_sketch = jax.lax.all_gather(local_sketch, axis, tiled=True)
    all_photo = jax.lax.all_gather(local_photo, axis, tiled=True)
    rows = local_sketch.shape[0]
    targets = jax.lax.axis_index(axis) * rows + jnp.arange(rows)
    sketch_to_photo = _cross_entropy_rows(local_sketch @ all_photo.T / temperature, targets)
    photo_to_sketch = _cross_entropy_rows(local_photo @ all_sketch.T / temperature, targets)
    return jax.lax.pmean(0.5 * (jnp.mean(sketch_to_photo) + jnp.mean(photo_to_sketch)), axis)

  return jax.shard_map(per_device, mesh=mesh, in_specs=(P(axis), P(axis)), out_specs=P(),
                       check_vma=False)(sketch, photo)
