"""Task `retrieval_attribution`: stroke attribution in sketch-based retrieval (issue 13, part 4).

With a model trained by the `sbir` task on the `quickdraw_photo` split
(`config.sbir_workdir`), for each test query (a QuickDraw drawing, strokes in
the order they were drawn) against the split's test photos:
  - the query is soft-drawn as the pipeline draws it (`QueryRenderer`); the
    retrieval metrics of these soft renders are put beside those of the
    pipeline's own renders (the mismatch);
  - SLA (IG over stroke opacities), gradient x input and occlusion of the
    cosine between the query and its top photo (the top-1 of the soft render);
  - the Spearman correlation of each attribution order (most positive first)
    with the drawing order, and of a random order;
  - early retrieval: the query drawn with only the first strokes of an order
    (drawing, random, and the attribution orders, computed on the whole
    drawing: an oracle), at fractions of its strokes and after 1..K strokes;
  - noisy-stroke filtering for retrieval: the strokes whose attribution
    against the top photo is negative dropped (`filter.methods`), against
    dropping as many at random and the shortest first (`noisy_strokes`).

Writes to the workdir: results.json (tables; early-retrieval differences to the drawing
order paired by query, mean and standard error), per_query.npz (attributions,
orders, correlations), retrieval_attribution.png (queries coloured by SLA, top
photos) and early_retrieval.png (the curves).
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.data.formats import image_folders
from sketchjax.methods import noisy_strokes
from sketchjax.methods import retrieval_attribution as ra
from sketchjax.methods import retrieval_metrics
from sketchjax.tasks import retrieval_attribution_figures as figures
from sketchjax.tasks import sbir

METHODS = ("sla_ig", "sla_grad_x_input", "occlusion")


def _buckets(strokes: Sequence[Sequence[np.ndarray]], by_size: bool) -> dict[int, list[int]]:
  """Query indices grouped by their stroke slots (a power of two), so that few shapes
  compile and a 5-stroke query does not pay for the 39-stroke one; without `by_size`
  one group (one compilation)."""
  slots = [sr.pad_batch([s])[1].shape[1] for s in strokes]
  if not by_size:
    return {max(slots): list(range(len(strokes)))}
  groups: dict[int, list[int]] = {}
  for i, n in enumerate(slots):
    groups.setdefault(n, []).append(i)
  return dict(sorted(groups.items()))


def _explain_fn(embed, renderer: ra.QueryRenderer, config: ml_collections.ConfigDict,
                early_orders: Sequence[str]):
  """The jitted per-bucket function: (xy, lens, keys, gallery) -> per-query results."""
  fractions = jnp.asarray(config.early.fractions, jnp.float32)
  steps_after = jnp.arange(1, config.early.max_strokes + 1, dtype=jnp.int32)

  def one(xy, lens, key, gallery, num_segments, num_pairs):
    coverage = sr.draw_strokes(xy, lens, renderer.settings, num_segments=num_segments,
                               num_pairs=num_pairs)
    present = lens > 0
    full = embed(renderer.images(sr.composite(coverage))[None])[0]
    top = jnp.argmax(gallery @ full)
    out = ra.query_attributions(embed, renderer, coverage, present, gallery[top],
                                steps=config.attribution.steps,
                                chunk=config.attribution.chunk or None)
    order = ra.orders(out, METHODS, present, key)
    n = present.sum()
    counts = jnp.concatenate([ra.prefix_counts(n, fractions), jnp.minimum(steps_after, n)])
    masks = jnp.concatenate([ra.prefix_masks(order[o], present, counts) for o in early_orders])
    prefix = ra.prefix_embeddings(embed, renderer, coverage, masks)
    lengths = ra.stroke_lengths(xy, lens, renderer.settings.line_width)
    filters = [noisy_strokes.filter_masks(out[m], lengths, present, jax.random.fold_in(key, 1))
               for m in config.filter.methods]
    keep = jnp.stack([f[name] for f in filters for name in noisy_strokes.FILTERS])
    filtered = ra.prefix_embeddings(embed, renderer, coverage, keep.astype(jnp.float32))
    out.update(filtered=filtered.reshape(len(filters), len(noisy_strokes.FILTERS), -1),
               filter_dropped=jnp.stack([n - f["attribution"].sum() for f in filters]))
    out.update(embedding=full, top=top, num_strokes=n,
               prefix=prefix.reshape(len(early_orders), counts.shape[0], -1),
               **{f"order/{k}": v for k, v in order.items()},
               **{f"spearman/{k}": ra.spearman(v, order["drawing"], present)
                  for k, v in order.items() if k != "drawing"})
    return out

  def batch(xy, lens, keys, gallery, num_segments, num_pairs):
    return jax.lax.map(lambda a: one(*a, gallery, num_segments, num_pairs), (xy, lens, keys),
                       batch_size=config.attribution.sketches_at_once)

  return jax.jit(batch, static_argnames=("num_segments", "num_pairs"))


def explain_queries(embed, renderer: ra.QueryRenderer, strokes: Sequence[Sequence[np.ndarray]],
                    gallery: np.ndarray, config: ml_collections.ConfigDict,
                    early_orders: Sequence[str]) -> dict[str, np.ndarray]:
  """Every query's results (see `_explain_fn`), stacked in query order; per-stroke arrays
  padded to the largest slot count with 0 (orders with -1)."""
  explain = _explain_fn(embed, renderer, config, early_orders)
  keys = jax.random.split(jax.random.key(config.seed), len(strokes))
  results: list[dict[str, np.ndarray] | None] = [None] * len(strokes)
  buckets = _buckets(strokes, config.attribution.buckets)
  slots = max(buckets)
  for num_strokes, members in buckets.items():
    start = time.time()
    xy, lens, num_segments = sr.pad_batch([renderer.pixels(strokes[i]) for i in members])
    num_pairs = sr.tile_pair_budget(xy, lens, renderer.settings)
    for at in range(0, len(members), config.attribution.batch):
      rows = members[at:at + config.attribution.batch]
      part = slice(at, at + len(rows))
      out = jax.device_get(explain(xy[part], lens[part], keys[np.asarray(rows)],
                                   jnp.asarray(gallery), num_segments, num_pairs))
      for j, i in enumerate(rows):
        results[i] = {k: _pad_slots(np.asarray(v[j]), num_strokes, slots, k)
                      for k, v in out.items()}
    logging.info("%d queries of <= %d strokes in %.1f s", len(members), num_strokes,
                 time.time() - start)
  return {k: np.stack([r[k] for r in results]) for k in results[0]}


def _pad_slots(value: np.ndarray, num_strokes: int, slots: int, key: str) -> np.ndarray:
  """A per-stroke array of one bucket padded from its slot count to `slots`."""
  per_stroke = key in METHODS or key.startswith("order/")
  if not per_stroke or value.shape[-1] == slots:
    return value
  fill = -1 if key.startswith("order/") else 0
  return np.concatenate([value, np.full(slots - num_strokes, fill, value.dtype)])


def _per_query(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray,
               gallery_labels: np.ndarray, mesh) -> dict[str, np.ndarray]:
  """Per query [Nq]: AP over the whole gallery ("map_all") and whether a photo of the
  query's class is in the top 10 ("acc_at_10"), for unit embeddings."""
  per_query = retrieval_metrics.per_query_metrics(
      retrieval_metrics.embedding_scores(query, gallery, 256, mesh), len(query), query_labels,
      gallery_labels, ks=(10,), ap_at=10, mesh=mesh, sharded_scores=True)
  return {"map_all": per_query["map_all"],
          "acc_at_10": (per_query["prec_at_10"] > 0).astype(np.float32)}


def _metrics(*args) -> dict[str, float]:
  """The means of `_per_query`: mAP@all and acc@10."""
  return {k: float(v.mean()) for k, v in _per_query(*args).items()}


def _mean_and_error(values: np.ndarray) -> dict[str, float]:
  values = values[np.isfinite(values)]
  return {"mean": float(values.mean()), "std_error": float(values.std(ddof=1) /
                                                          np.sqrt(len(values))),
          "count": int(len(values))}


def _select(items: Sequence[Any], max_queries: int) -> list[Any]:
  """All items, or `max_queries` of them spread evenly over the (label-sorted) list."""
  if not max_queries or max_queries >= len(items):
    return list(items)
  return [items[i] for i in np.linspace(0, len(items) - 1, max_queries).round().astype(int)]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Explains the test queries of the trained workdir; writes the tables and figures."""
  workdir = pathlib.Path(workdir)
  model, variables, trained, mesh = sbir.load_trained(pathlib.Path(config.sbir_workdir))
  if trained.data.split != "quickdraw_photo" or trained.data.preprocess != "mobilenet":
    raise ValueError(f"{config.sbir_workdir}: trained on {trained.data.split!r} with "
                     f"{trained.data.preprocess!r} preprocessing; this task needs the "
                     "quickdraw_photo split (drawings keep their strokes) and 'mobilenet'")
  trained.unlock()
  trained.data.dir = config.data.dir
  trained.data.classes = config.data.classes or trained.data.classes
  split = sbir.load_split(trained)
  queries = _select(split.test.sketches, config.queries.max)
  photos = split.test.photos
  query_labels = np.array([split.test.label_index(q) for q in queries])
  photo_labels = np.array([split.test.label_index(p) for p in photos])
  gallery = sbir.embed_items(model, variables, photos, "photo", trained, mesh)
  pipeline = sbir.embed_items(model, variables, queries, "sketch", trained, mesh)
  renderer = ra.QueryRenderer.pipeline(trained.data.image_size, config.render.size,
                                       config.render.supersample)
  strokes = [image_folders.drawing_strokes(q) for q in queries]
  embed = lambda images: model.apply(variables, images, train=False,
                                     method=model.encode_sketch)[0]
  early_orders = tuple(config.early.orders)
  start = time.time()
  out = explain_queries(embed, renderer, strokes, gallery, config, early_orders)
  seconds = time.time() - start

  fractions = list(config.early.fractions)
  after = list(range(1, config.early.max_strokes + 1))
  early = {o: {"fraction": [], "after_strokes": []} for o in early_orders}
  paired = {o: {"fraction": [], "after_strokes": []} for o in early_orders if o != "drawing"}
  for k in range(len(fractions) + len(after)):
    kind = "fraction" if k < len(fractions) else "after_strokes"
    scores = {o: _per_query(out["prefix"][:, a, k], query_labels, gallery, photo_labels, mesh)
              for a, o in enumerate(early_orders)}
    for o, values in scores.items():
      early[o][kind].append({m: float(v.mean()) for m, v in values.items()})
      if o in paired and "drawing" in scores:  # the same queries: paired differences
        paired[o][kind].append({m: _mean_and_error(v - scores["drawing"][m])
                                for m, v in values.items()})
  completeness = np.abs(out["sla_ig"].sum(-1) - (out["score"] - out["blank_score"]))
  filtering = {m: {"dropped_strokes": _mean_and_error(out["filter_dropped"][:, a].astype(float)),
                   **{name: _metrics(out["filtered"][:, a, b], query_labels, gallery,
                                     photo_labels, mesh)
                      for b, name in enumerate(noisy_strokes.FILTERS)}}
               for a, m in enumerate(config.filter.methods)}
  result = {
      "sbir_workdir": str(config.sbir_workdir), "queries": len(queries),
      "gallery": len(photos), "seconds": round(seconds, 1),
      "render": {"pipeline": _metrics(pipeline, query_labels, gallery, photo_labels, mesh),
                 "soft": _metrics(out["embedding"], query_labels, gallery, photo_labels, mesh),
                 "query_cosine_soft_vs_pipeline": _mean_and_error(
                     np.sum(out["embedding"] * pipeline, -1))},
      "top1_hit_rate": float(np.mean(photo_labels[out["top"]] == query_labels)),
      "score": _mean_and_error(out["score"]),
      "ig_completeness_abs_error": _mean_and_error(completeness),
      "spearman_vs_drawing_order": {
          k.partition("/")[2]: _mean_and_error(v) for k, v in out.items()
          if k.startswith("spearman/")},
      "spearman_queries_with_3_or_more_strokes": {
          k.partition("/")[2]: _mean_and_error(v[out["num_strokes"] >= 3]) for k, v in
          out.items() if k.startswith("spearman/")},
      "early_fractions": fractions, "early_after_strokes": after, "early": early,
      "early_minus_drawing_order": paired if "drawing" in early_orders else {},
      "filter": filtering,
  }
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "results.json").write_text(json.dumps(result, indent=1))
  np.savez(workdir / "per_query.npz", paths=np.array([q.path for q in queries]),
           **{k.replace("/", "__"): v for k, v in out.items() if k not in ("prefix", "filtered")})
  figures.save_early_retrieval(workdir / "early_retrieval.png", result)
  shown = _select(range(len(queries)), config.figure.queries)
  tops = [np.argsort(-(gallery @ out["embedding"][i]), kind="stable")[:config.figure.top_k]
          for i in shown]
  figures.save_attribution_figure(
      workdir / "retrieval_attribution.png",
      [renderer.pixels(strokes[i]) for i in shown], [out["sla_ig"][i] for i in shown],
      [queries[i].label for i in shown],
      [[image_folders.load_image(photos[j]) for j in top] for top in tops],
      [[photos[j].label == queries[i].label for j in top] for i, top in zip(shown, tops)],
      renderer.settings.size)
  print(json.dumps({k: result[k] for k in ("render", "top1_hit_rate",
                                           "spearman_vs_drawing_order")}))
  return result

