"""ZSE-SBIR pair rankings: exact (every sketch-photo pair scored, each item encoded once), and
the shortlist-and-rerank approximation.

Spec 3.6: the relation score of a pair needs both items' cross-attention, but
each item's self-attention features and its CA projections depend on the item
alone (`ZseSbir.encode`, `ZseSbir.project`). So every test sketch and photo is
encoded and projected once (`ItemFeatures`), kept on the host as one flat
float32 row an item, and `pair_score_tile` scores a tile of sketch queries
against the whole gallery in chunks of photos (`ZseSbir.pair_logits_tile` on
the tile x chunk pairs: the cross-attention per head over the whole tile, the
numbers of `ZseSbir.pair_logits` on every pair). Two pair scores (`PAIR_SCORES`):
  "rn"      Ours-RN: float32 RN logits before the sigmoid (a monotone map: the
            ranking of the sigmoid scores without their float32 ties near 1);
            `fp16_scores=True` is the official code's ranking (the whole model
            in fp16, `test.py`): sigmoid scores rounded to float16, ties broken
            by gallery index.
  "ca_ret"  Ret by the cross-attention [Ret] tokens, the `-r ca` mode the
            official code once had (root `valid.py` at c9ebd10, dropped by
            `utils/valid.py`): cosine of r(s | p) and r(p | s), the CA outputs'
            [Ret] rows of the pair (the code ranks by the L2 distance of the
            normalised tokens, the same order). The tokens depend on the pair,
            so every pair is scored as RN is, at the same cost.
The official validation loop instead recomputes the photo features for every
chunk of 20 sketches (20 x 20 pairs a call).

`rerank_score_tile` (ours, not in the paper or the code; an approximation):
the top K photos of each query by the self-attention [Ret] cosine (Ours-Ret),
then RN on those K pairs only; the shortlist ranked first in RN order, the rest
after it in Ret order (spec 3.6), Nq x K pairs scored instead of Nq x Ng.
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from sketchjax.models import zse_sbir
from sketchjax.methods import retrieval_metrics
from sketchjax.methods.unit_vectors import unit

PAIR_SCORES = ("rn", "ca_ret")


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


def _check_score(score: str, fp16_scores: bool) -> None:
  if score not in PAIR_SCORES:
    raise ValueError(f"score must be one of {PAIR_SCORES}, got {score!r}")
  if fp16_scores and score != "rn":
    raise ValueError("fp16_scores (the code's fp16 sigmoid) applies to the RN score only")


def _pair_score(logits: jax.Array, aux: dict, score: str, fp16_scores: bool) -> jax.Array:
  """The `score` of pairs from `pair_logits` (or `pair_logits_tile`) outputs, float32 [...]."""
  if score == "ca_ret":
    return jnp.sum(unit(aux["ca_ret_sketch"]) * unit(aux["ca_ret_photo"]), axis=-1)
  if fp16_scores:
    return jax.nn.sigmoid(logits).astype(jnp.float16).astype(jnp.float32)
  return logits


def pair_scorer(model: zse_sbir.ZseSbir, sketch_features: ItemFeatures,
                photo_features: ItemFeatures, score: str = "rn", fp16_scores: bool = False):
  """Jitted (params, sketch rows [P, F], photo rows [P, F]) -> float32 [P], the `score`
  ("rn" or "ca_ret", module doc) of pair i = (sketch row i, photo row i)."""
  _check_score(score, fp16_scores)

  @jax.jit
  def scores(params, sketch_rows, photo_rows):
    logits, aux = model.apply({"params": params}, sketch_features.unflatten(sketch_rows),
                              photo_features.unflatten(photo_rows), method=model.pair_logits)
    return _pair_score(logits, aux, score, fp16_scores)

  return scores


def tile_scorer(model: zse_sbir.ZseSbir, sketch_features: ItemFeatures,
                photo_features: ItemFeatures, score: str = "rn", fp16_scores: bool = False):
  """Jitted (params, sketch rows [t, F], photo rows [c, F]) -> float32 [t, c], the `score` of
  every pair (sketch row i, photo row j): `pair_scorer`'s numbers (up to float32 rounding)
  through `ZseSbir.pair_logits_tile`, the CA attention per head over the whole tile."""
  _check_score(score, fp16_scores)

  @jax.jit
  def scores(params, sketch_rows, photo_rows):
    logits, aux = model.apply({"params": params}, sketch_features.unflatten(sketch_rows),
                              photo_features.unflatten(photo_rows),
                              method=model.pair_logits_tile)
    return _pair_score(logits, aux, score, fp16_scores)

  return scores


def _padded_queries(sketches: np.ndarray, start: int, stop: int, tile: int) -> jax.Array:
  queries = np.zeros((tile, sketches.shape[1]), np.float32)
  queries[:stop - start] = sketches[start:stop]
  return jnp.asarray(queries)


def pair_score_tile(model: zse_sbir.ZseSbir, params: Any, sketches: np.ndarray,
                    photos: np.ndarray, sketch_features: ItemFeatures,
                    photo_features: ItemFeatures, *, tile: int, chunk: int = 64,
                    score: str = "rn", fp16_scores: bool = False
                    ) -> retrieval_metrics.ScoreTile:
  """score_tile(start, stop) -> float32 [stop - start, Ng]: the exact `score` of sketch
  queries [start, stop) against every photo.

  sketches [Nq, F], photos [Ng, F]: `ItemFeatures.flat` rows; tiles are padded
  to `tile` queries and the gallery to whole chunks (one compiled shape).
  """
  num_gallery = len(photos)
  padded = -(-num_gallery // chunk) * chunk
  gallery = jnp.asarray(np.pad(photos, ((0, padded - num_gallery), (0, 0))))
  score_chunk = tile_scorer(model, sketch_features, photo_features, score, fp16_scores)

  def score_tile(start: int, stop: int) -> jax.Array:
    queries = _padded_queries(sketches, start, stop, tile)
    blocks = [score_chunk(params, queries, gallery[i:i + chunk])
              for i in range(0, padded, chunk)]
    return jnp.concatenate(blocks, axis=1)[:stop - start, :num_gallery]

  return score_tile


def rerank_score_tile(model: zse_sbir.ZseSbir, params: Any, sketches: np.ndarray,
                      photos: np.ndarray, sketch_ret: np.ndarray, photo_ret: np.ndarray,
                      sketch_features: ItemFeatures, photo_features: ItemFeatures, *,
                      k: int, tile: int, chunk: int = 64, fp16_scores: bool = False
                      ) -> retrieval_metrics.ScoreTile:
  """score_tile(start, stop) -> float32 [stop - start, Ng] of the shortlist-and-rerank
  ranking (module doc): the K photos of highest self-attention [Ret] cosine (ties: lower
  index) get 2 + K - r, r their 0-based place in RN order (logit descending, ties: lower
  gallery index), every other photo its cosine (<= 1), so the metrics rank the shortlist
  first in RN order and the rest by Ret. K = Ng gives the exact RN ranking.

  sketches [Nq, F], photos [Ng, F]: `ItemFeatures.flat` rows; sketch_ret [Nq, D],
  photo_ret [Ng, D]: the SA [Ret] tokens (`ZseSbir.encode`'s "ret").
  """
  num_gallery = len(photos)
  if not 1 <= k <= num_gallery:
    raise ValueError(f"rerank k={k} must be in [1, {num_gallery}] (the gallery size)")
  ret_queries = retrieval_metrics.l2_normalize(sketch_ret)
  ret_gallery = jnp.asarray(retrieval_metrics.l2_normalize(photo_ret))
  gallery = jnp.asarray(photos)
  scores = pair_scorer(model, sketch_features, photo_features, "rn", fp16_scores)
  padded_k = -(-k // chunk) * chunk

  @jax.jit
  def shortlist(ret_q):
    cosine = ret_q @ ret_gallery.T
    _, index = lax.top_k(cosine, k)  # ties: the lower index first
    return cosine, jnp.pad(index, ((0, 0), (0, padded_k - k)))

  @jax.jit
  def score_chunk(params, queries, index):
    t, c = index.shape
    pairs = scores(params, jnp.repeat(queries, c, axis=0), gallery[index.reshape(-1)])
    return pairs.reshape(t, c)

  @jax.jit
  def compose(cosine, index, logits):
    order_index = lax.sort((-logits[:, :k], index[:, :k]), dimension=1, num_keys=2)[1]
    rows = jnp.arange(cosine.shape[0])[:, None]
    return cosine.at[rows, order_index].set(2.0 + k - jnp.arange(k, dtype=jnp.float32))

  def score_tile(start: int, stop: int) -> jax.Array:
    queries = _padded_queries(sketches, start, stop, tile)
    cosine, index = shortlist(jnp.asarray(_padded_queries(ret_queries, start, stop, tile)))
    logits = jnp.concatenate([score_chunk(params, queries, index[:, i:i + chunk])
                              for i in range(0, padded_k, chunk)], axis=1)
    return compose(cosine, index, logits)[:stop - start]

  return score_tile
