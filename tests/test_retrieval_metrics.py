"""Streaming retrieval metrics against a direct numpy implementation of spec 4."""

import jax
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from sketchjax.methods import retrieval_metrics as rm


def reference(scores, query_labels, gallery_labels, match=None, ks=(100, 200), ap_at=200):
  """Per query: stable argsort of -score, then the formulas of spec 4 -> {name: [Nq]}."""
  out = {}
  for q, row in enumerate(np.asarray(scores, np.float32)):
    order = np.argsort(-row, kind="stable")
    rel = (gallery_labels[order] == query_labels[q]).astype(np.float64)
    values = {"num_relevant": int(rel.sum())}
    ranks = np.arange(1, len(rel) + 1)
    precision = np.cumsum(rel) / ranks
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    r = rel.sum()
    values["map_all"] = (rel * precision).sum() / max(r, 1)
    values["map_all_voc"] = (rel * envelope).sum() / max(r, 1)
    top = rel[:ap_at]
    top_envelope = np.maximum.accumulate(precision[:ap_at][::-1])[::-1]
    values[f"map_at_{ap_at}"] = (top * precision[:ap_at]).sum() / max(min(ap_at, r), 1)
    values[f"map_at_{ap_at}_voc"] = (top * top_envelope).sum() / max(min(ap_at, r), 1)
    for k in ks:
      values[f"prec_at_{k}"] = rel[:k].sum() / k
      k_min = int(min(k, r))
      values[f"prec_at_{k}_min_r"] = rel[:k_min].sum() / max(k_min, 1)
    for name, ranked in (("dfsbir_map_10hits", rel), ("dfsbir_precision_top100", rel[:100])):
      hits, total = 0, 0.0  # the DF-SBIR code's compute_avg_prec(tgt_set_size=10)
      for position, is_hit in enumerate(ranked, 1):
        if is_hit:
          hits += 1
          total += hits / position
          if hits == 10:
            break
      values[name] = total / hits if hits else 0.0
    if match is not None:
      rank = int(np.nonzero(order == match[q])[0][0]) + 1
      values["acc_at_1"], values["acc_at_10"] = float(rank <= 1), float(rank <= 10)
    for name, value in values.items():
      out.setdefault(name, []).append(value)
  return {k: np.asarray(v) for k, v in out.items()}


def quantised_problem(seed, num_queries=37, num_gallery=203, classes=7, levels=6):
  """Scores on a few levels (many ties), a class with no gallery item (R = 0)."""
  rng = np.random.default_rng(seed)
  scores = np.round(rng.uniform(-1, 1, (num_queries, num_gallery)) * levels) / levels
  query_labels = rng.integers(0, classes + 1, num_queries)  # label `classes`: R = 0
  query_labels[:2] = classes
  gallery_labels = rng.integers(0, classes, num_gallery)
  match = rng.integers(0, num_gallery, num_queries)
  return scores.astype(np.float32), query_labels, gallery_labels, match


def run(scores, query_labels, gallery_labels, mesh, **kwargs):
  return rm.per_query_metrics(lambda a, b: scores[a:b], len(scores), query_labels,
                              gallery_labels, mesh=mesh, **kwargs)


def one_device_mesh():
  return jax.make_mesh((1,), ("data",), (jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:1])


@pytest.mark.parametrize("tile", [5, 64])
def test_matches_numpy_reference_with_ties_and_empty_queries(tile):
  scores, query_labels, gallery_labels, match = quantised_problem(0)
  expected = reference(scores, query_labels, gallery_labels, match, ks=(10, 50), ap_at=20)
  got = run(scores, query_labels, gallery_labels, rm.default_mesh(), query_match=match,
            ks=(10, 50), ap_at=20, tile=tile)
  assert set(got) == set(expected)
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
  summary = rm.summarize(got)
  assert summary["skipped_queries"] == np.sum(expected["num_relevant"] == 0) >= 2
  counted = expected["num_relevant"] > 0
  assert summary["map_all"] == pytest.approx(expected["map_all"][counted].mean(), rel=1e-6)
  assert summary["acc_at_10"] == pytest.approx(expected["acc_at_10"].mean())


def test_plain_ap_matches_sklearn_and_voc_is_higher():
  rng = np.random.default_rng(1)
  query, gallery = rng.normal(size=(20, 16)), rng.normal(size=(300, 16))
  query_labels, gallery_labels = rng.integers(0, 4, 20), rng.integers(0, 4, 300)
  got = rm.per_query_metrics(
      rm.embedding_scores(query, gallery, 8, rm.default_mesh()), 20, query_labels,
      gallery_labels, tile=8, sharded_scores=True)
  scores = rm.l2_normalize(query) @ rm.l2_normalize(gallery).T  # tie-free
  sklearn_ap = [average_precision_score(gallery_labels == l, s)
                for l, s in zip(query_labels, scores)]
  np.testing.assert_allclose(got["map_all"], sklearn_ap, rtol=1e-5)
  assert np.all(got["map_all_voc"] >= got["map_all"])
  assert np.any(got["map_all_voc"] > got["map_all"] + 1e-3)
  summary = rm.retrieval_metrics(query, query_labels, gallery, gallery_labels, tile=8)
  assert summary["map_all"] == pytest.approx(np.mean(sklearn_ap), rel=1e-5)


def test_hand_worked_ranked_list():
  # Scores 5 > 4 = 4 > 2 > 1 over gallery items 0..4; items 0, 2, 4 relevant (class 1).
  # The tie 4 = 4 puts item 1 before item 2, so the ranked relevance is 1 0 1 0 1
  # (R = 3): P(1) = 1, P(3) = 2/3, P(5) = 3/5.
  #   plain AP = (1 + 2/3 + 3/5) / 3 = 34/45
  #   VOC AP: envelope at the hits max(P(1), P(3), P(5)) = 1, then 2/3, then 3/5: 34/45 too
  #   AP@2: hits in the top 2: rank 1; denominator min(2, 3) = 2: 1/2 (both flavours)
  #   Prec@2 = 1/2; Prec@4 = 2/4; Prec@4 (min(4, R) = 3 items) = 2/3
  #   the DF-SBIR capped AP = plain AP here (R < 10); match item 3 is ranked 4th.
  # Reversing the tie order (item 2 first) gives 1 1 0 0 1: AP = (1 + 1 + 3/5) / 3.
  scores = np.array([[5, 4, 4, 2, 1]], np.float32)
  got = rm.summarize(run(scores, np.array([1]), np.array([1, 0, 1, 0, 1]), rm.default_mesh(),
                         query_match=np.array([3]), ks=(2, 4), ap_at=2))
  assert got["map_all"] == pytest.approx(34 / 45)
  assert got["map_all_voc"] == pytest.approx(34 / 45)
  assert got["map_at_2"] == got["map_at_2_voc"] == pytest.approx(1 / 2)
  assert got["prec_at_2"] == got["prec_at_2_min_r"] == pytest.approx(1 / 2)
  assert got["prec_at_4"] == pytest.approx(2 / 4)
  assert got["prec_at_4_min_r"] == pytest.approx(2 / 3)
  assert got["dfsbir_map_10hits"] == pytest.approx(34 / 45)
  assert got["acc_at_1"] == 0.0 and got["acc_at_10"] == 1.0
  swapped = rm.summarize(run(scores, np.array([1]), np.array([1, 1, 0, 0, 1]),
                             rm.default_mesh()))
  assert swapped["map_all"] == pytest.approx((1 + 1 + 3 / 5) / 3)
  # VOC differs from plain when precision rises later: 0 1 1 -> plain (1/2 + 2/3) / 2,
  # envelope (2/3 + 2/3) / 2.
  rising = rm.summarize(run(np.array([[3, 2, 1]], np.float32), np.array([0]),
                            np.array([1, 0, 0]), rm.default_mesh()))
  assert rising["map_all"] == pytest.approx((1 / 2 + 2 / 3) / 2)
  assert rising["map_all_voc"] == pytest.approx(2 / 3)


def test_one_and_eight_devices_identical():
  scores, query_labels, gallery_labels, match = quantised_problem(2, num_gallery=101)
  one = run(scores, query_labels, gallery_labels, one_device_mesh(), query_match=match,
            tile=16)
  eight = run(scores, query_labels, gallery_labels, rm.default_mesh(), query_match=match,
              tile=16)
  assert rm.default_mesh().devices.size == 8
  for name in one:
    np.testing.assert_array_equal(one[name], eight[name], err_msg=name)
  rng = np.random.default_rng(3)
  query, gallery = exact_unit_vectors(rng, 30), exact_unit_vectors(rng, 101)
  labels = rng.integers(0, 5, 30), rng.integers(0, 5, 101)
  by_mesh = [rm.retrieval_metrics(query, labels[0], gallery, labels[1], tile=7, mesh=m)
             for m in (one_device_mesh(), rm.default_mesh())]
  assert by_mesh[0] == by_mesh[1]


def exact_unit_vectors(rng, count):
  """Rows of +-1 on one axis or +-1/2 on all four: unit length, dot products exact."""
  axis = np.eye(4, dtype=np.float32)[rng.integers(0, 4, count)] * rng.choice([-1, 1], (count, 1))
  half = rng.choice([-0.5, 0.5], (count, 4)).astype(np.float32)
  return np.where(rng.random((count, 1)) < 0.5, axis, half)


def test_top_k_matches_stable_argsort():
  rng = np.random.default_rng(4)
  query, gallery = exact_unit_vectors(rng, 13), exact_unit_vectors(rng, 50)
  gallery[7] = 0  # a zero embedding scores 0
  scores = query @ gallery.T  # exact: values in {0, +-1/4, +-1/2, +-1}, many ties
  order = np.argsort(-scores, kind="stable", axis=1)[:, :30]
  for mesh in (one_device_mesh(), rm.default_mesh()):
    index, values = rm.top_k_retrieval(query, gallery, 30, tile=5, mesh=mesh)
    np.testing.assert_array_equal(index, order)
    np.testing.assert_array_equal(values, np.take_along_axis(scores, order, axis=1))


def test_bad_inputs():
  scores, query_labels, gallery_labels, _ = quantised_problem(5)
  with pytest.raises(ValueError, match="query_match"):
    run(scores, query_labels, gallery_labels, rm.default_mesh(),
        query_match=np.full(len(scores), len(gallery_labels)))
  with pytest.raises(ValueError, match="expected"):
    run(scores[:, 1:], query_labels, gallery_labels, rm.default_mesh())
  scores[3, 4] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    run(scores, query_labels, gallery_labels, rm.default_mesh())
