"""Exact retrieval metrics of both SBIR codebases, streamed over query tiles.

For one query the gallery is ranked by descending float32 score, ties broken by
the lower gallery index (a stable sort). Relevant = same class label; R = the
number of relevant gallery items; r_m = the 1-based rank of the m-th hit and
P(r_m) = m / r_m the precision there (spec 4 of
../shared/specs/sbir_dfsbir_and_zse.md). Per query:
  map_all                 plain AP, (1/R) sum_m P(r_m) (SAKE, sklearn);
  map_all_voc             VOC-interpolated AP of the ZSE-SBIR code: P replaced
                          by its envelope max_{m' >= m} P(r_m');
  map_at_{K}[_voc]        both over the top K only, divided by min(K, R);
  prec_at_{K}             hits in the top K / K;
  prec_at_{K}_min_r       hits in the top min(K, R) / min(K, R) (ZSE-SBIR code);
  dfsbir_map_10hits       the DF-SBIR code's "mAP": AP over the first
                          min(10, R) hits only, divided by their number;
  dfsbir_precision_top100 the DF-SBIR code's "Precision": the same capped AP
                          on the top-100 list (0 without a hit there);
  acc_at_{k}              fine-grained: the query's one true match (a gallery
                          index per query) is ranked within the top k.
Class metrics average over queries with R > 0 (the others are counted in
`skipped_queries`); acc averages over every query.

Nothing of size queries x gallery is ever held. Queries go in tiles of T rows;
a tile's scores [T, Ng] are split over the devices along the gallery axis, and
one jitted `shard_map` computes the ranks of the relevant items exactly
without sorting the gallery: with the query's R relevant items sorted (score
descending, index ascending), every gallery item counts the relevant items
ranked before it, p_i, by comparing against each of them (gather-free, so it
vectorises; O(Ng * R) a query); then r_m = #{i : p_i <= m} from a histogram
of p summed over the devices. Only per-query values come back to the host.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np

ScoreTile = Callable[[int, int], jax.Array]  # (start, stop) -> float32[stop - start, Ng]

DF_SBIR_HITS = 10      # hits the DF-SBIR code's AP stops at
DF_SBIR_TOP = 100      # list length of its "Precision"
_CHUNK = 16            # relevant items compared per unrolled loop step
_NO_MATCH = -1


def default_mesh() -> Mesh:
  """A one-axis ('data',) mesh over all devices."""
  return jax.make_mesh((jax.device_count(),), ("data",), (AxisType.Auto,))


def l2_normalize(x: np.ndarray) -> np.ndarray:
  """Rows of float[N, d] scaled to unit length (zero rows stay zero), float32."""
  x = np.asarray(x, np.float32)
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norm, np.finfo(np.float32).tiny)


def retrieval_metrics(query_emb: np.ndarray, query_labels: np.ndarray,
                      gallery_emb: np.ndarray, gallery_labels: np.ndarray, *,
                      query_match: np.ndarray | None = None, ks: Sequence[int] = (100, 200),
                      ap_at: int = 200, acc_at: Sequence[int] = (1, 10), tile: int = 256,
                      mesh: Mesh | None = None) -> dict[str, float]:
  """Means of every metric for cosine scores of embeddings float[Nq, d], float[Ng, d]."""
  mesh = mesh or default_mesh()
  return summarize(per_query_metrics(
      embedding_scores(query_emb, gallery_emb, tile, mesh), len(query_labels), query_labels,
      gallery_labels, query_match=query_match, ks=ks, ap_at=ap_at, acc_at=acc_at, tile=tile,
      mesh=mesh, sharded_scores=True))


def streaming_retrieval_metrics(score_tile: ScoreTile, num_queries: int,
                                query_labels: np.ndarray, gallery_labels: np.ndarray,
                                **kwargs) -> dict[str, float]:
  """Means of every metric for any `score_tile(start, stop) -> float32[stop - start, Ng]`.

  Keyword arguments as `per_query_metrics`.
  """
  return summarize(per_query_metrics(score_tile, num_queries, query_labels, gallery_labels,
                                     **kwargs))


def per_query_metrics(score_tile: ScoreTile, num_queries: int, query_labels: np.ndarray,
                      gallery_labels: np.ndarray, *, query_match: np.ndarray | None = None,
                      ks: Sequence[int] = (100, 200), ap_at: int = 200,
                      acc_at: Sequence[int] = (1, 10), tile: int = 256,
                      mesh: Mesh | None = None,
                      sharded_scores: bool = False) -> dict[str, np.ndarray]:
  """Every metric per query -> {name: float32[Nq]}, plus 'num_relevant' int32[Nq].

  Args:
    score_tile: scores of queries [start, stop) against the whole gallery,
      float32[stop - start, Ng]; never called with an empty range.
    query_labels, gallery_labels: int class labels [Nq], [Ng].
    query_match: int[Nq] gallery index of each query's true match (acc_at_k).
    tile: queries a tile (T).
    sharded_scores: `score_tile` already returns [T, Ng padded to the device
      count] split on the gallery axis (as `embedding_scores`).
  """
  mesh = mesh or default_mesh()
  query_labels = np.asarray(query_labels)
  gallery_labels = np.asarray(gallery_labels)
  num_gallery = len(gallery_labels)
  if (num_queries < 1 or query_labels.shape != (num_queries,) or gallery_labels.ndim != 1
      or tile < 1):
    raise ValueError(f"query_labels {query_labels.shape} must be [{num_queries}] (>= 1 "
                     f"query), gallery_labels {gallery_labels.shape} 1-D, tile {tile} >= 1")
  if query_match is not None:
    query_match = np.asarray(query_match, np.int32)
    if query_match.shape != (num_queries,) or np.any(query_match < 0) or np.any(
        query_match >= num_gallery):
      raise ValueError(f"query_match must be [{num_queries}] gallery indices in "
                       f"[0, {num_gallery})")
  relevant = _relevant_table(query_labels, gallery_labels)  # [Nq, Rm], Ng = none
  devices = mesh.devices.size
  padded_gallery = -(-num_gallery // devices) * devices
  tile_fn = _tile_metrics_fn(mesh, num_gallery, tuple(ks), ap_at, tuple(acc_at))
  score_sharding = NamedSharding(mesh, P(None, mesh.axis_names))
  replicated = NamedSharding(mesh, P())

  pending = []  # per tile (start, stop, device outputs): tiles run while the host prepares
  for start in range(0, num_queries, tile):
    stop = min(start + tile, num_queries)
    scores = score_tile(start, stop)
    if not sharded_scores:
      scores = jnp.asarray(scores, jnp.float32)
      if scores.shape != (stop - start, num_gallery):
        raise ValueError(f"score_tile({start}, {stop}) gave {scores.shape}, expected "
                         f"{(stop - start, num_gallery)}")
      scores = jax.device_put(jnp.pad(scores, ((0, tile - (stop - start)),
                                               (0, padded_gallery - num_gallery)),
                                      constant_values=-jnp.inf), score_sharding)
    rows = np.full((tile, relevant.shape[1]), num_gallery, np.int32)
    rows[:stop - start] = relevant[start:stop]
    match = np.full((tile,), _NO_MATCH, np.int32)
    if query_match is not None:
      match[:stop - start] = query_match[start:stop]
    pending.append((start, stop, tile_fn(scores, jax.device_put(rows, replicated),
                                         jax.device_put(match, replicated))))
    if len(pending) > 1:  # at most two tiles' scores alive at once
      jax.block_until_ready(pending[-2][2])
  outputs = []
  for start, stop, out in pending:
    out = {k: np.asarray(v)[:stop - start] for k, v in out.items()
           if query_match is not None or not k.startswith("acc_at_")}
    if np.any(out.pop("nan_scores")):
      raise ValueError(f"score_tile({start}, {stop}) has NaN scores")
    outputs.append(out)
  return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def summarize(per_query: dict[str, np.ndarray]) -> dict[str, float]:
  """Means: class metrics over queries with R > 0, acc over all; counts of both."""
  counted = per_query["num_relevant"] > 0
  out = {"num_queries": float(len(counted)), "skipped_queries": float(np.sum(~counted))}
  for name, values in per_query.items():
    if name == "num_relevant":
      continue
    keep = slice(None) if name.startswith("acc_at_") else counted
    out[name] = float(np.mean(values[keep], dtype=np.float64)) if values[keep].size else np.nan
  return out


def embedding_scores(query_emb: np.ndarray, gallery_emb: np.ndarray, tile: int,
                     mesh: Mesh) -> ScoreTile:
  """score_tile of cosine similarity, float32[T, Ng padded] split on the gallery axis.

  The gallery's L2-normalised embeddings are put on the devices once, split
  over them (padding rows are zero; the metrics mask them); each tile pads the
  queries to T rows.
  """
  queries = l2_normalize(query_emb)
  gallery = l2_normalize(gallery_emb)
  devices = mesh.devices.size
  gallery = np.pad(gallery, ((0, -len(gallery) % devices), (0, 0)))
  gallery = jax.device_put(gallery, NamedSharding(mesh, P(mesh.axis_names)))
  replicated = NamedSharding(mesh, P())
  matmul = _matmul_fn(mesh)

  def score_tile(start: int, stop: int) -> jax.Array:
    block = np.zeros((tile, queries.shape[1]), np.float32)
    block[:stop - start] = queries[start:stop]
    return matmul(jax.device_put(block, replicated), gallery)

  return score_tile


def top_k_retrieval(query_emb: np.ndarray, gallery_emb: np.ndarray, k: int, *,
                    tile: int = 256, mesh: Mesh | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Top k gallery items by cosine -> (indices int32[Nq, k], scores float32[Nq, k]).

  Same order as the metrics: descending score, the lower index first on ties.
  """
  mesh = mesh or default_mesh()
  num_gallery = len(gallery_emb)
  if not 1 <= k <= num_gallery:
    raise ValueError(f"k={k} must be in [1, {num_gallery}] (the gallery size)")
  score_tile = embedding_scores(query_emb, gallery_emb, tile, mesh)
  select = _top_k_fn(mesh, num_gallery, k)
  indices, scores = [], []
  for start in range(0, len(query_emb), tile):
    stop = min(start + tile, len(query_emb))
    values, index = select(score_tile(start, stop))
    indices.append(np.asarray(index)[:stop - start])
    scores.append(np.asarray(values)[:stop - start])
  return np.concatenate(indices), np.concatenate(scores)


@functools.lru_cache(maxsize=None)
def _matmul_fn(mesh: Mesh):
  """Jitted (queries [T, d] replicated, gallery [Ngp, d] split) -> [T, Ngp] gallery-split."""
  return jax.jit(lambda q, g: q @ g.T,
                 out_shardings=NamedSharding(mesh, P(None, mesh.axis_names)))


def _relevant_table(query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
  """Gallery indices of each query's relevant items, ascending -> int32[Nq, Rm].

  Rm (the largest R, rounded up to a multiple of the unroll chunk) is padded
  with Ng, an index of no gallery item.
  """
  classes, gallery_class = np.unique(gallery_labels, return_inverse=True)
  counts = np.bincount(gallery_class, minlength=len(classes))
  width = max(_CHUNK, -(-int(counts.max(initial=0)) // _CHUNK) * _CHUNK)
  table = np.full((len(classes) + 1, width), len(gallery_labels), np.int32)
  order = np.argsort(gallery_class, kind="stable")
  ends = np.cumsum(counts)
  for c, (count, end) in enumerate(zip(counts, ends)):
    table[c, :count] = order[end - count:end]
  position = np.searchsorted(classes, query_labels)
  found = (position < len(classes)) & (classes[np.minimum(position, len(classes) - 1)]
                                       == query_labels)
  return table[np.where(found, position, len(classes))]  # last row: nothing relevant


def _count_before(scores: jax.Array, index: jax.Array, value: jax.Array,
                  value_index: jax.Array) -> jax.Array:
  """Items ranked before (value, value_index): higher score, or equal and lower index."""
  return (scores > value) | ((scores == value) & (index < value_index))


@functools.lru_cache(maxsize=None)
def _tile_metrics_fn(mesh: Mesh, num_gallery: int, ks: tuple[int, ...], ap_at: int,
                     acc_at: tuple[int, ...]):
  """Jitted (scores [T, Ngp] gallery-split, relevant [T, Rm], match [T]) -> per query."""
  axes = mesh.axis_names

  def local(scores, relevant, match):
    t, n = scores.shape
    offset = lax.axis_index(axes) * n
    index = offset + jnp.arange(n, dtype=jnp.int32)
    valid = index < num_gallery
    scores = jnp.where(valid, scores, -jnp.inf)
    nan_scores = lax.psum(jnp.sum(jnp.isnan(scores), axis=1), axes)

    def lookup(gallery_index):  # scores at global indices [T, m] (0 outside the gallery)
      local_index = gallery_index - offset
      here = (local_index >= 0) & (local_index < n)
      found = jnp.take_along_axis(scores, jnp.clip(local_index, 0, n - 1), axis=1)
      return lax.psum(jnp.where(here, found, 0.0), axes)

    # The relevant items in rank order; padding slots rank after everything.
    num_relevant = jnp.sum(relevant < num_gallery, axis=1)
    rel_scores = jnp.where(relevant < num_gallery, lookup(relevant), -jnp.inf)
    neg_scores, rel_index = lax.sort((-rel_scores, relevant), dimension=1, num_keys=2)
    rel_scores = -neg_scores
    rel_index = jnp.where(rel_index < num_gallery, rel_index, jnp.iinfo(jnp.int32).max)

    # p_i: relevant items ranked before item i, R compares an item.
    def chunk(c, before):
      values = lax.dynamic_slice_in_dim(rel_scores, c * _CHUNK, _CHUNK, axis=1)
      value_index = lax.dynamic_slice_in_dim(rel_index, c * _CHUNK, _CHUNK, axis=1)
      for j in range(_CHUNK):
        before += _count_before(values[:, j:j + 1], value_index[:, j:j + 1],
                                scores, index[None]).astype(jnp.int32)
      return before

    width = relevant.shape[1]
    before = lax.fori_loop(0, width // _CHUNK, chunk, jnp.zeros_like(scores, jnp.int32))
    rows = jnp.broadcast_to(jnp.arange(t)[:, None], (t, n))
    histogram = jnp.zeros((t, width + 1), jnp.int32).at[rows, before].add(
        valid.astype(jnp.int32)[None])
    ranks = jnp.cumsum(lax.psum(histogram, axes), axis=1)[:, :width]  # r_m, 1-based

    out = _metrics_from_ranks(ranks, num_relevant, ks, ap_at)
    out["nan_scores"] = nan_scores
    match_score = lookup(match[:, None])
    ahead = jnp.sum(_count_before(scores, index[None], match_score, match[:, None]), axis=1)
    match_rank = lax.psum(ahead.astype(jnp.int32), axes) + 1
    for k in acc_at:
      out[f"acc_at_{k}"] = (match_rank <= k).astype(jnp.float32)
    return out

  spec = P(None, axes)
  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec, P(), P()), out_specs=P()))


def _metrics_from_ranks(ranks: jax.Array, num_relevant: jax.Array, ks: tuple[int, ...],
                        ap_at: int) -> dict[str, jax.Array]:
  """Per-query metrics from the hits' ranks int32[T, Rm] (ascending) and R int32[T]."""
  hit_number = jnp.arange(1, ranks.shape[1] + 1)
  is_hit = hit_number <= num_relevant[:, None]
  precision = jnp.where(is_hit, hit_number / ranks, 0.0).astype(jnp.float32)
  r = num_relevant.astype(jnp.float32)

  def average_precision(keep, denominator):
    kept = jnp.where(keep, precision, 0.0)
    envelope = jnp.where(keep, lax.cummax(kept, axis=1, reverse=True), 0.0)
    denominator = jnp.maximum(denominator, 1.0)
    return jnp.sum(kept, axis=1) / denominator, jnp.sum(envelope, axis=1) / denominator

  def hits_within(k):  # k: int or int32[T]
    return jnp.sum(is_hit & (ranks <= jnp.expand_dims(jnp.asarray(k), -1)), axis=1)

  out = {"num_relevant": num_relevant}
  out["map_all"], out["map_all_voc"] = average_precision(is_hit, r)
  out[f"map_at_{ap_at}"], out[f"map_at_{ap_at}_voc"] = average_precision(
      is_hit & (ranks <= ap_at), jnp.minimum(r, ap_at))
  for k in ks:
    k_min_r = jnp.minimum(num_relevant, k)
    out[f"prec_at_{k}"] = hits_within(k) / jnp.float32(k)
    out[f"prec_at_{k}_min_r"] = hits_within(k_min_r) / jnp.maximum(k_min_r, 1).astype(
        jnp.float32)
  capped = jnp.minimum(num_relevant, DF_SBIR_HITS)
  out["dfsbir_map_10hits"], _ = average_precision(hit_number <= capped[:, None], capped)
  capped_top = jnp.minimum(hits_within(DF_SBIR_TOP), DF_SBIR_HITS)
  out["dfsbir_precision_top100"], _ = average_precision(hit_number <= capped_top[:, None],
                                                        capped_top)
  return {k: v.astype(jnp.float32) if k != "num_relevant" else v for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def _top_k_fn(mesh: Mesh, num_gallery: int, k: int):
  """Jitted scores [T, Ngp] gallery-split -> (values, indices) [T, k], lower index on ties."""
  axes = mesh.axis_names

  def local(scores):
    n = scores.shape[1]
    index = lax.axis_index(axes) * n + jnp.arange(n, dtype=jnp.int32)
    scores = jnp.where(index < num_gallery, scores, -jnp.inf)
    values, where = lax.top_k(scores, min(k, n))
    # Candidates in device order: equal scores stay in ascending global index.
    values = lax.all_gather(values, axes, axis=1, tiled=True)
    candidates = lax.all_gather(index[where], axes, axis=1, tiled=True)
    values, pick = lax.top_k(values, k)
    return values, jnp.take_along_axis(candidates, pick, axis=1)

  # all_gather's result is the same on every device, which check_vma cannot infer.
  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P(None, axes),
                               out_specs=(P(), P()), check_vma=False))
