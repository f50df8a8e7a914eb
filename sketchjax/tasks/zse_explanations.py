"""The steps of `zse`'s `--config.mode=explain` (`methods/zse_explain.py` on a trained model).

Queries (ours): `explain.stats_queries` candidate sketches evenly spaced over the test
sketches in the split's order (every (Nq // n)-th from the first; the split lists a class's
sketches together, so they cover the classes), each ranked against every test photo by
`explain.ranking` ("ret": the self-attention [Ret] cosine, Ours-Ret, the default; "rn": the
exact RN logit, Ours-RN). A query is a hit when its top photo is relevant (its class, or its
own photo on a fine-grained split). Drawn: the correspondences of the first
`explain.pairs_per_kind` hits and misses with their top photos (in candidate order), patch
replacement of the first `explain.num_queries` candidates with their top photos, and a
retrieve figure (top `explain.top_k` photos, each with its correspondences) for each of them.
The statistics are `zse_explain.pair_statistics` of every candidate's top-1 pair, averaged
over hits and over misses.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from sketchjax.data.formats import image_folders
from sketchjax.data.image_items import ImageItem
from sketchjax.methods import retrieval_metrics
from sketchjax.methods import zse_explain
from sketchjax.methods import zse_ranking
from sketchjax.models import zse_sbir
from sketchjax.tasks import sbir
from sketchjax.tasks import zse_figures

RANKINGS = ("ret", "rn")


def candidate_queries(num_sketches: int, n: int) -> np.ndarray:
  """Indices of n sketches evenly spaced over num_sketches (every (N // n)-th from 0)."""
  step = max(1, num_sketches // max(1, n))
  return np.arange(0, num_sketches, step)[:n]


def rank(model: zse_sbir.ZseSbir, params, queries: Sequence[ImageItem],
         photos: Sequence[ImageItem], config: ml_collections.ConfigDict, mesh, ranking: str,
         top_k: int) -> tuple[np.ndarray, np.ndarray]:
  """(top photo indices int64[Q, k], their scores float32[Q, k]) of the queries against the
  photos by `ranking` (module doc); ties: the lower photo index."""
  if ranking == "ret":
    def ret_of(modality):
      return lambda v, images: model.apply(v, images, modality, method=model.encode)["ret"]

    q, g = (sbir.embed_images(ret_of(m), {"params": params}, items, config, mesh)
            for m, items in (("sketch", queries), ("photo", photos)))
    scores = retrieval_metrics.l2_normalize(q) @ retrieval_metrics.l2_normalize(g).T
  elif ranking == "rn":
    features = {m: zse_ranking.ItemFeatures(model, params, m) for m in ("sketch", "photo")}
    rows = [sbir.embed_images(features[m].flat, params, items, config, mesh)
            for m, items in (("sketch", queries), ("photo", photos))]
    tile = zse_ranking.pair_score_tile(model, params, *rows, features["sketch"],
                                       features["photo"], tile=config.eval.rn_tile,
                                       chunk=config.eval.rn_chunk)
    scores = np.concatenate([np.asarray(tile(s, min(s + config.eval.rn_tile, len(queries))))
                             for s in range(0, len(queries), config.eval.rn_tile)])
  else:
    raise ValueError(f"explain.ranking must be one of {RANKINGS}, got {ranking!r}")
  top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
  return top, np.take_along_axis(scores, top, 1)


def model_inputs(items: Sequence[ImageItem], config: ml_collections.ConfigDict) -> np.ndarray:
  """The model's inputs float32[N, S, S, 3] in [-1, 1] (the config's preprocessing)."""
  pre = sbir.preprocess_of(config)
  return np.stack([pre(image_folders.load_image(i), i.modality) for i in items])


def explain_pairs(explain, params, sketches: np.ndarray, photos: np.ndarray,
                  batch: int) -> dict[str, np.ndarray]:
  """`zse_explain.explainer` output over N pairs in batches of `batch` (the last padded, one
  compiled shape), as numpy arrays with leading axis N."""
  parts = []
  for start in range(0, len(sketches), batch):
    s, p = sketches[start:start + batch], photos[start:start + batch]
    pad = ((0, batch - len(s)),) + ((0, 0),) * 3
    out = explain(params, jnp.asarray(np.pad(s, pad)), jnp.asarray(np.pad(p, pad)))
    parts.append({k: np.asarray(v)[:len(s)] for k, v in out.items()})
  return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def group_means(stats: dict[str, np.ndarray], hits: np.ndarray) -> dict[str, dict]:
  """Per-pair statistics -> {"hits": {...}, "misses": {...}, "all": {...}}: each statistic's
  mean over the group's pairs (NaNs left out), its standard error ("<name>_se", None below 2
  values) and the number of pairs ("pairs")."""
  out = {}
  for name, keep in (("hits", hits), ("misses", ~hits), ("all", np.ones_like(hits))):
    group = {"pairs": int(keep.sum())}
    for k, v in stats.items():
      values = v[keep][~np.isnan(v[keep])]
      group[k] = float(values.mean()) if len(values) else None
      group[f"{k}_se"] = (float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1
                          else None)
    out[name] = group
  return out


def display(images: np.ndarray) -> np.ndarray:
  """Model inputs in [-1, 1] -> [0, 1] for drawing."""
  return np.clip((images + 1) / 2, 0, 1)


def run_explain(model: zse_sbir.ZseSbir, params, split, config: ml_collections.ConfigDict,
                mesh, out_dir: pathlib.Path) -> dict:
  """Every step of the explain mode (module doc): figures into out_dir; returns the summary
  (pairs' scores, matched token indices, statistics, figure paths)."""
  ex = config.explain
  test = split.test
  candidates = candidate_queries(len(test.sketches), ex.stats_queries)
  queries = [test.sketches[i] for i in candidates]
  top, rank_scores = rank(model, params, queries, test.photos, config, mesh, ex.ranking,
                          ex.top_k)
  relevant = ((lambda q, p: q.instance == p.instance) if split.relevance == "instance"
              else (lambda q, p: q.label == p.label))
  hit = np.array([[relevant(q, test.photos[j]) for j in row] for q, row in zip(queries, top)])
  k = top.shape[1]
  sketch_inputs = model_inputs(queries, config)
  photo_index = top.reshape(-1)
  photo_inputs = model_inputs([test.photos[j] for j in photo_index], config)
  explain = zse_explain.explainer(model, top_n=ex.lines, similarity=ex.similarity)
  pairs = explain_pairs(explain, params, np.repeat(sketch_inputs, k, 0), photo_inputs,
                        config.train.eval_batch_size)
  tg = zse_explain.token_grid(model)
  first = np.arange(len(queries)) * k  # each query's top-1 pair
  stats = zse_explain.pair_statistics({key: v[first] for key, v in pairs.items()},
                                      sketch_inputs, tg.grid, ex.lines)

  def view(q: int, j: int, lead: str = "") -> zse_figures.PairView:
    i = q * k + j
    ca, reverse, kernel = zse_figures.strongest(pairs, i, ex.lines, tg)
    photo = test.photos[top[q, j]]
    return zse_figures.PairView(
        display(sketch_inputs[q]), display(photo_inputs[i]), ca, reverse, pairs["kernel"][i],
        kernel, f"{lead or f'{j + 1}. '}{photo.label} ({ex.ranking} {rank_scores[q, j]:.3f}, "
        f"RN {pairs['score'][i]:.3f})", bool(hit[q, j]))

  out_dir.mkdir(parents=True, exist_ok=True)
  figures = []
  shown = [q for kind in (True, False)
           for q in np.flatnonzero(hit[:, 0] == kind)[:ex.pairs_per_kind]]
  if shown:
    views = [view(q, 0, f"{'hit' if hit[q, 0] else 'miss'}: {queries[q].label} -> ")
             for q in shown]
    figures.append(out_dir / "correspondences.png")
    zse_figures.save_correspondence_figure(figures[-1], views, tg.grid)
  drawn = range(min(ex.num_queries, len(queries)))
  figures.append(out_dir / "patch_replacement.png")
  zse_figures.save_patch_replacement_figure(
      figures[-1], [display(sketch_inputs[q]) for q in drawn],
      [display(pairs["synthesis"][q * k]) for q in drawn],
      [display(photo_inputs[q * k]) for q in drawn],
      [f"{queries[q].label} -> {test.photos[top[q, 0]].label}" for q in drawn],
      ex.similarity, tg.grid)
  for q in drawn:
    figures.append(out_dir / f"retrieve_{q}.png")
    zse_figures.save_retrieve_figure(figures[-1], display(sketch_inputs[q]),
                                     f"query: {queries[q].label}",
                                     [view(q, j) for j in range(k)], tg.grid)
  return {"ranking": ex.ranking, "similarity": ex.similarity, "lines": ex.lines,
          "token_grid": {"grid": tg.grid, "cell_pixels": tg.cell,
                         "anchor_cell_pixels": tg.anchor_cell,
                         "anchors_spatial": tg.anchors_spatial},
          "query_choice": f"every {max(1, len(test.sketches) // max(1, ex.stats_queries))}-th "
                          f"of {len(test.sketches)} test sketches in split order",
          "statistics_top1": group_means(stats, hit[:, 0]),
          "top1_hit_rate": float(hit[:, 0].mean()),
          "figures": [str(f) for f in figures],
          "queries": [_query_record(queries[q], [test.photos[j] for j in top[q]], hit[q],
                                    rank_scores[q], {key: v[q * k:(q + 1) * k]
                                                     for key, v in pairs.items()})
                      for q in range(len(queries))]}


def _query_record(query: ImageItem, photos: Sequence[ImageItem], hits: np.ndarray,
                  rank_scores: np.ndarray, pairs: dict[str, np.ndarray]) -> dict:
  """JSON of one query: each top photo's scores and the pair's matched token indices."""
  top = []
  for j, photo in enumerate(photos):
    top.append({
        "photo": photo.path, "label": photo.label, "hit": bool(hits[j]),
        "rank_score": float(rank_scores[j]), "rn_logit": float(pairs["logit"][j]),
        "rn_score": float(pairs["score"][j]), "ret_cosine": float(pairs["ret_cosine"][j]),
        "ca_ret_cosine": float(pairs["ca_ret_cosine"][j]),
        "ca_sketch_to_photo": {"query": pairs["ca_sketch_query"][j].tolist(),
                               "key": pairs["ca_sketch_key"][j].tolist(),
                               "weight": np.round(pairs["ca_sketch_weight"][j], 5).tolist()},
        "ca_photo_to_sketch": {"query": pairs["ca_photo_query"][j].tolist(),
                               "key": pairs["ca_photo_key"][j].tolist(),
                               "weight": np.round(pairs["ca_photo_weight"][j], 5).tolist()},
        "kernel_top": [[int(s), int(p), round(float(v), 5)] for s, p, v in zip(
            pairs["kernel_sketch"][j], pairs["kernel_photo"][j], pairs["kernel_value"][j])],
        "synthesis_source": pairs["synthesis_source"][j].tolist()})
  return {"sketch": query.path, "label": query.label, "top": top}
