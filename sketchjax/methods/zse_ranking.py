"""Exact ZSE-SBIR RN ranking: every sketch-photo pair scored, each item encoded once.

Spec 3.6: the relation score of a pair needs both items' cross-attention, but
each item's self-attention features and its CA projections depend on the item
alone (`ZseSbir.encode`, `ZseSbir.project`). So every test sketch and photo is
encoded and projected once (`item_features`), kept on the host as one flat
float32 row an item, and `rn_score_tile` scores a tile of sketch queries
against the whole gallery in chunks of photos (`ZseSbir.pair_logits` on the
tile x chunk pairs), returning float32 logits before the sigmoid (a monotone
map: the ranking of the sigmoid scores without their float32 ties near 1).
`fp16_scores=True` is the official code's ranking (the whole model in fp16,
`test.py`): sigmoid scores rounded to float16, ties broken by gallery index.
The official validation loop instead recomputes the photo features for every
chunk of 20 sketches (20 x 20 pairs a call).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from sketchjax.models import zse_sbir
from sketchjax.methods import retrieval_metrics


class ItemFeatures:
  """Flat per-item projections [N, F] and how to unflatten a batch of them."""

  def __init__(self, model: zse_sbir.ZseSbir, params: Any, modality: str):
    self.model, self.params, self.modality = model, params, modality
    size = model.image_size
    example = jax.eval_shape(self._project, params, jnp.zeros((1, size, size, 3)))
    one = jax.tree.map(lambda s: jnp.zeros(s.shape[1:], s.dtype), example)
    _, self._unravel_one = ravel_pytree(one)

  def _project(self, params: Any, images: jax.Array) -> dict:
    model = self.model
    return model.apply({"params": params}, model.apply({"params": params}, images,
                                                       self.modality, method=model.encode),
                       self.modality, method=model.project)

  def flat(self, params: Any, images: jax.Array) -> jax.Array:
    """Images [B, S, S, 3] -> flat projections float32 [B, F]."""
    tree = self._project(params, images)
    return jax.vmap(lambda t: ravel_pytree(t)[0])(tree).astype(jnp.float32)

  def unflatten(self, rows: jax.Array) -> dict:
    """[B, F] -> the projections pytree with leading axis B (kept int32 stays int32)."""
    return jax.vmap(self._unravel_one)(rows)


def rn_score_tile(model: zse_sbir.ZseSbir, params: Any, sketches: np.ndarray,
                  photos: np.ndarray, sketch_features: ItemFeatures,
                  photo_features: ItemFeatures, *, tile: int, chunk: int = 64,
                  fp16_scores: bool = False) -> retrieval_metrics.ScoreTile:
  """score_tile(start, stop) -> float32 [stop - start, Ng] of RN logits (or the
  code's fp16 sigmoid scores) of sketch queries [start, stop) against every photo.

  sketches [Nq, F], photos [Ng, F]: `ItemFeatures.flat` rows; tiles are padded
  to `tile` queries and the gallery to whole chunks (one compiled shape).
  """
  num_gallery = len(photos)
  padded = -(-num_gallery // chunk) * chunk
  gallery = jnp.asarray(np.pad(photos, ((0, padded - num_gallery), (0, 0))))

  @jax.jit
  def score_chunk(params, queries, photo_rows):
    t, c = queries.shape[0], photo_rows.shape[0]
    q = sketch_features.unflatten(jnp.repeat(queries, c, axis=0))
    p = photo_features.unflatten(jnp.tile(photo_rows, (t, 1)))
    logits, _ = model.apply({"params": params}, q, p, method=model.pair_logits)
    logits = logits.reshape(t, c)
    if fp16_scores:
      return jax.nn.sigmoid(logits).astype(jnp.float16).astype(jnp.float32)
    return logits

  def score_tile(start: int, stop: int) -> jax.Array:
    queries = np.zeros((tile, sketches.shape[1]), np.float32)
    queries[:stop - start] = sketches[start:stop]
    queries = jnp.asarray(queries)
    blocks = [score_chunk(params, queries, gallery[i:i + chunk])
              for i in range(0, padded, chunk)]
    return jnp.concatenate(blocks, axis=1)[:stop - start, :num_gallery]

  return score_tile


def rn_metrics(model: zse_sbir.ZseSbir, params: Any, sketch_rows: np.ndarray,
               photo_rows: np.ndarray, query_labels: Sequence[int],
               gallery_labels: Sequence[int], *, tile: int = 16, chunk: int = 64,
               fp16_scores: bool = False, mesh=None, query_match=None) -> dict[str, float]:
  """Every retrieval metric of the exact RN ranking (`retrieval_metrics`)."""
  features = {m: ItemFeatures(model, params, m) for m in ("sketch", "photo")}
  score_tile = rn_score_tile(model, params, sketch_rows, photo_rows, features["sketch"],
                             features["photo"], tile=tile, chunk=chunk,
                             fp16_scores=fp16_scores)
  return retrieval_metrics.streaming_retrieval_metrics(
      score_tile, len(sketch_rows), np.asarray(query_labels), np.asarray(gallery_labels),
      tile=tile, mesh=mesh, query_match=query_match)
