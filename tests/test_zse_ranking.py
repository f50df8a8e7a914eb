"""ZSE-SBIR rankings on a tiny random model: exact RN and CA-Ret scores against the whole
model, shortlist-and-rerank against the exact RN ranking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.methods import retrieval_metrics
from sketchjax.methods import zse_ranking
from sketchjax.models import zse_sbir

NQ, NG = 3, 7


@pytest.fixture(scope="module")
def tiny():
  model = zse_sbir.zse_small(image_size=64, dropout=0.0, num_layers=1)
  params = zse_sbir.init_variables(model, jax.random.key(0))["params"]
  rng = np.random.default_rng(0)
  sketches = jnp.asarray(rng.uniform(-1, 1, (NQ, 64, 64, 3)), jnp.float32)
  photos = jnp.asarray(rng.uniform(-1, 1, (NG, 64, 64, 3)), jnp.float32)
  features = {m: zse_ranking.ItemFeatures(model, params, m) for m in ("sketch", "photo")}
  rows = {m: np.asarray(features[m].flat(params, x))
          for m, x in (("sketch", sketches), ("photo", photos))}
  ret = {m: np.asarray(model.apply({"params": params}, x, m, method=model.encode)["ret"])
         for m, x in (("sketch", sketches), ("photo", photos))}
  whole_logits, aux = model.apply({"params": params}, jnp.repeat(sketches, NG, 0),
                                  jnp.tile(photos, (NQ, 1, 1, 1)))
  return dict(model=model, params=params, features=features, rows=rows, ret=ret,
              logits=np.asarray(whole_logits).reshape(NQ, NG), aux=aux)


def _tile_scores(score_tile, tile):
  return np.concatenate([np.asarray(score_tile(s, min(s + tile, NQ)))
                         for s in range(0, NQ, tile)])


def _pair_tile(t, score):
  return zse_ranking.pair_score_tile(t["model"], t["params"], t["rows"]["sketch"],
                                     t["rows"]["photo"], t["features"]["sketch"],
                                     t["features"]["photo"], tile=2, chunk=3, score=score)


def _rerank_tile(t, k):
  return zse_ranking.rerank_score_tile(
      t["model"], t["params"], t["rows"]["sketch"], t["rows"]["photo"], t["ret"]["sketch"],
      t["ret"]["photo"], t["features"]["sketch"], t["features"]["photo"], k=k, tile=2,
      chunk=3)


def _order(scores):
  """Gallery indices by descending score, lower index first on ties (the metrics' order)."""
  return np.stack([np.lexsort((np.arange(len(row)), -row)) for row in scores])


def test_rn_scores_every_pair_as_the_whole_model(tiny):
  np.testing.assert_allclose(_tile_scores(_pair_tile(tiny, "rn"), 2), tiny["logits"],
                             rtol=1e-4, atol=1e-5)


def test_ca_ret_is_the_cosine_of_the_pair_cross_attention_ret_tokens(tiny):
  s, p = (np.asarray(tiny["aux"][k]) for k in ("ca_ret_sketch", "ca_ret_photo"))
  cosine = np.sum(retrieval_metrics.l2_normalize(s) * retrieval_metrics.l2_normalize(p), -1)
  scores = _tile_scores(_pair_tile(tiny, "ca_ret"), 2)
  np.testing.assert_allclose(scores, cosine.reshape(NQ, NG), atol=1e-5)
  # Not the self-attention [Ret] cosine: the pair's cross-attention changes it.
  sa = retrieval_metrics.l2_normalize(tiny["ret"]["sketch"]) @ retrieval_metrics.l2_normalize(
      tiny["ret"]["photo"]).T
  assert np.abs(scores - sa).max() > 1e-3


@pytest.mark.parametrize("score, fp16", [("rn", False), ("rn", True), ("ca_ret", False)])
def test_tiles_score_as_the_pair_scorer_on_every_pair(tiny, score, fp16):
  """pair_score_tile (pair_logits_tile inside) gives pair_scorer's numbers on the repeated
  pairs, padding rows and columns cut off."""
  tile = zse_ranking.pair_score_tile(tiny["model"], tiny["params"], tiny["rows"]["sketch"],
                                     tiny["rows"]["photo"], tiny["features"]["sketch"],
                                     tiny["features"]["photo"], tile=2, chunk=3, score=score,
                                     fp16_scores=fp16)
  got = _tile_scores(tile, 2)
  scorer = zse_ranking.pair_scorer(tiny["model"], tiny["features"]["sketch"],
                                   tiny["features"]["photo"], score, fp16)
  want = np.asarray(scorer(tiny["params"], np.repeat(tiny["rows"]["sketch"], NG, 0),
                           np.tile(tiny["rows"]["photo"], (NQ, 1)))).reshape(NQ, NG)
  assert got.shape == (NQ, NG)
  if fp16:  # sigmoid scores rounded to float16 (one float16 step apart at most)
    np.testing.assert_array_equal(got, got.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(got, want, atol=2.0 ** -11)
  else:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fp16_scores_only_for_rn(tiny):
  with pytest.raises(ValueError, match="RN score only"):
    zse_ranking.pair_scorer(tiny["model"], tiny["features"]["sketch"],
                            tiny["features"]["photo"], "ca_ret", fp16_scores=True)


def test_rerank_with_the_whole_gallery_is_the_exact_ranking(tiny):
  rerank = _tile_scores(_rerank_tile(tiny, NG), 2)
  np.testing.assert_array_equal(_order(rerank), _order(tiny["logits"]))
  labels = np.array([0, 1, 1]), np.array([0, 0, 1, 1, 2, 2, 1])
  exact = retrieval_metrics.streaming_retrieval_metrics(_pair_tile(tiny, "rn"), NQ, *labels,
                                                        tile=2)
  approx = retrieval_metrics.streaming_retrieval_metrics(_rerank_tile(tiny, NG), NQ, *labels,
                                                         tile=2)
  assert approx == exact


def test_rerank_orders_the_ret_shortlist_by_rn_then_the_rest_by_ret(tiny):
  k = 3
  order = _order(_tile_scores(_rerank_tile(tiny, k), 2))
  ret = retrieval_metrics.l2_normalize(tiny["ret"]["sketch"]) @ retrieval_metrics.l2_normalize(
      tiny["ret"]["photo"]).T
  ret_order = _order(ret)
  for q in range(NQ):
    shortlist = ret_order[q, :k]
    by_rn = shortlist[np.lexsort((shortlist, -tiny["logits"][q, shortlist]))]
    np.testing.assert_array_equal(order[q, :k], by_rn)
    np.testing.assert_array_equal(order[q, k:], ret_order[q, k:])
  # A shortlist of 1 keeps Ret's whole order.
  np.testing.assert_array_equal(_order(_tile_scores(_rerank_tile(tiny, 1), 2)), ret_order)


def test_rerank_k_out_of_range(tiny):
  with pytest.raises(ValueError, match="gallery size"):
    _rerank_tile(tiny, NG + 1)
