"""Task `zse`: ZSE-SBIR trained as the official code (spec 3.5), evaluated by its rankings.

  train: items of the official sampler (three classes: (s, p+) a positive pair
    of one class, (s-, p-) a negative pair), loss 2 L_triplet + 4 L_rn,
    AdamW(1e-5, weight decay 1e-2) as the code, the generic trainer (exact
    resume, metrics.jsonl, TensorBoard). Every eval scores the split's test
    set (the unseen classes). Model selection (`train.select_on`):
      "unseen"        as the code: by the test-set numbers, selection on the
                      test classes (leakage), which the log says;
      "seen_heldout"  ours: by the same ranking on a held-out part of the seen
                      classes (`sbir_splits.seen_heldout_split`, fixed by
                      SHA-1 of the photo ids; trained without it), logged as
                      "heldout_*".
    The selected metric is `train.select_metric` (higher is better); the best
    step's parameters go to `<workdir>/best/params.msgpack`, its step and value
    to `<workdir>/best.json` (kept across resumes).
  evaluate: a trained workdir (`eval.checkpoint`: "latest" or "best") on
    `config.data.split`'s test set, to `<workdir>/eval_<split>.json`.
  explain: the same trained workdir's token correspondences (cross-attention and
    kernel matches), patch-replacement synthesis and retrieve figures on the
    split's test set (`zse_explanations`, `explain.*`), to `<workdir>/explain/`
    (PNGs and `explain.json`: pair scores, matched token indices, statistics).

Rankings of the test sketches against the test photos (`methods/zse_ranking.py`):
  (no prefix)  Ours-Ret: `eval.ret_token="sa"` the L2-normalised self-attention
               [Ret] tokens (the code's `-r sa`, one embedding an item);
               "ca" the cross-attention [Ret] tokens of each pair (the `-r ca`
               the code once had), every pair scored in tiles as RN;
  rn_          Ours-RN, every pair exact (`eval.rn` in training, `eval.evaluate_rn`
               in evaluate);
               `eval.fp16_scores` ranks by the code's fp16 sigmoid scores;
  rerank_      shortlist-and-rerank (`eval.rerank_k` = K > 0; ours, an
               approximation): top K by SA Ret, RN on those pairs only, with
               `rerank_pairs_scored` against the exact `rn_pairs_scored`.
Each with its wall seconds of scoring and metrics (`*seconds`; the encodings, once for all
rankings, in `encode_*_seconds`). Fine-grained splits (instance
relevance) add `class_acc_at_{1,10}`: the own photo's rank among the photos of
the query's class only (acc_at_* is among all test photos). Where some test
classes were training classes of the model and some not (cross-dataset),
`unseen_*` averages over the queries of the unseen ones (`unseen_classes`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

from absl import logging
from flax import serialization
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from sketchjax.data import image_pipeline
from sketchjax.data import sbir_splits
from sketchjax.methods import retrieval_metrics
from sketchjax.methods import sbir_losses
from sketchjax.methods import zse_ranking
from sketchjax.models import encoders
from sketchjax.models import zse_sbir
from sketchjax.tasks import sbir
from sketchjax.tasks import zse_explanations
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer

VARIANTS = {"zse_vit_b16": zse_sbir.zse_vit_b16, "zse_small": zse_sbir.zse_small,
            "zse_mobilenet": zse_sbir.zse_mobilenet}
BEST_FILE = "best.json"
BEST_PARAMS = pathlib.Path("best") / "params.msgpack"


def build_model(config: ml_collections.ConfigDict) -> zse_sbir.ZseSbir:
  m = config.model
  if m.variant not in VARIANTS:
    raise ValueError(f"unknown model.variant {m.variant!r}; expected one of {list(VARIANTS)}")
  extra = {"freeze_mobilenet": m.freeze_mobilenet} if m.variant == "zse_mobilenet" else {}
  return VARIANTS[m.variant](image_size=config.data.image_size, dropout=m.dropout,
                             conv_stem=m.conv_stem, ca_convention=m.ca_convention,
                             token_reshape=m.token_reshape, **extra)


LOSS_KINDS = ("zse", "ret_triplet")


def zse_objective(model: zse_sbir.ZseSbir, config: ml_collections.ConfigDict
                  ) -> trainer.Objective:
  """Batches of `image_pipeline.zse_train_iterator`; init from config.model.pretrained.

  `config.loss.kind`: "zse", the paper's 2 L_triplet (CA [Ret] tokens) + 4 L_rn;
  "ret_triplet", the paper's ViT-Ret baseline (our reading of it): the same network
  trained by the triplet loss on the self-attention [Ret] tokens only, r(s), r(p+),
  r(p-) (s- unused), no CA or RN (their parameters stay at init).
  """
  kind = config.loss.get("kind", "zse")
  if kind not in LOSS_KINDS:
    raise ValueError(f"loss.kind must be one of {LOSS_KINDS}, got {kind!r}")
  initial = encoders.initial_variables(lambda: zse_sbir.init_variables(
      model, jax.random.key(config.seed), config.model.pretrained or None))

  def init(rng, batch):
    del rng, batch  # The initial variables are those of config.seed.
    return initial()["params"]

  def ret_loss(params, batch, rng):
    def ret(images, modality, key):
      return model.apply({"params": params}, images, modality, train=True,
                         rngs={"dropout": key}, method=model.encode)["ret"]

    photos = ret(jnp.concatenate([batch["photo_positive"], batch["photo_negative"]]),
                 "photo", jax.random.fold_in(rng, 1))
    half = batch["sketch"].shape[0]
    triplet = sbir_losses.triplet_margin_loss(ret(batch["sketch"], "sketch", rng),
                                              photos[:half], photos[half:], config.loss.margin)
    return triplet, {"triplet": triplet}

  def loss(params, batch, rng):
    if kind == "ret_triplet":
      return ret_loss(params, batch, rng)
    sketches = jnp.concatenate([batch["sketch"], batch["sketch_negative"]])
    photos = jnp.concatenate([batch["photo_positive"], batch["photo_negative"]])
    logits, aux = model.apply({"params": params}, sketches, photos, train=True,
                              rngs={"dropout": rng})
    half = batch["sketch"].shape[0]
    return sbir_losses.zse_sbir_loss(logits, aux["ca_ret_sketch"][:half],
                                     aux["ca_ret_photo"][:half], aux["ca_ret_photo"][half:],
                                     config.loss.margin)

  return trainer.Objective(init=init, loss=loss, evaluate=None)


def _cosine_tile(query: np.ndarray, gallery: np.ndarray) -> retrieval_metrics.ScoreTile:
  q, g = retrieval_metrics.l2_normalize(query), jnp.asarray(retrieval_metrics.l2_normalize(gallery))
  return lambda start, stop: jnp.asarray(q[start:stop]) @ g.T


def _class_masked(score_tile: retrieval_metrics.ScoreTile, query_labels: np.ndarray,
                  gallery_labels: np.ndarray) -> retrieval_metrics.ScoreTile:
  """score_tile with every photo of another class than the query's at -inf."""
  same = query_labels[:, None] == gallery_labels[None, :]
  return lambda start, stop: jnp.where(same[start:stop], score_tile(start, stop), -jnp.inf)


class _TestSet:
  """The rankings of a split's test set under one model: per-query metrics, summarised."""

  def __init__(self, model, params, split, config, mesh, seen_classes=()):
    self.model, self.params, self.split, self.config, self.mesh = (model, params, split,
                                                                   config, mesh)
    test = split.test
    self.labels = [np.array([test.label_index(i) for i in items])
                   for items in (test.sketches, test.photos)]
    self.match = (sbir._instance_matches(test.sketches, test.photos)
                  if split.relevance == "instance" else None)
    unseen = [c for c in test.classes if c not in set(seen_classes)]
    self.unseen = unseen if len(unseen) < len(test.classes) else []
    self._ret = self._rows = None

  def ret(self) -> tuple[np.ndarray, np.ndarray]:
    """SA [Ret] tokens of the test sketches [Nq, D] and photos [Ng, D]."""
    if self._ret is None:
      model, test = self.model, self.split.test

      def ret_of(modality):
        return lambda v, images: model.apply(v, images, modality, method=model.encode)["ret"]

      variables = {"params": self.params}
      self._ret = tuple(sbir.embed_images(ret_of(m), variables, items, self.config, self.mesh)
                        for m, items in (("sketch", test.sketches), ("photo", test.photos)))
    return self._ret

  def rows(self) -> tuple[np.ndarray, np.ndarray]:
    """`ItemFeatures.flat` rows of the test sketches and photos, and their features."""
    if self._rows is None:
      test, features = self.split.test, {}
      rows = []
      for modality, items in (("sketch", test.sketches), ("photo", test.photos)):
        features[modality] = zse_ranking.ItemFeatures(self.model, self.params, modality)
        rows.append(sbir.embed_images(features[modality].flat, self.params, items,
                                      self.config, self.mesh))
      self._rows = (*rows, features["sketch"], features["photo"])
    return self._rows

  def summary(self, score_tile, prefix: str, tile: int, sharded: bool = False) -> dict:
    """Metrics of one ranking: all queries, the unseen classes' queries, class-restricted acc."""
    kwargs = dict(query_match=self.match, tile=tile, mesh=self.mesh)
    per_query = retrieval_metrics.per_query_metrics(
        score_tile, len(self.labels[0]), *self.labels, sharded_scores=sharded, **kwargs)
    out = retrieval_metrics.summarize(per_query)
    if self.unseen:
      keep = np.isin(self.labels[0], [self.split.test.classes.index(c) for c in self.unseen])
      out.update({f"unseen_{k}": v for k, v in retrieval_metrics.summarize(
          {k: v[keep] for k, v in per_query.items()}).items()})
    return {f"{prefix}{k}": v for k, v in out.items()}

  def class_acc(self, score_tile, prefix: str, tile: int) -> dict:
    """acc_at_k of the own photo among the photos of the query's class only."""
    masked = _class_masked(score_tile, *self.labels)
    result = retrieval_metrics.streaming_retrieval_metrics(
        masked, len(self.labels[0]), *self.labels, query_match=self.match, tile=tile,
        mesh=self.mesh)
    return {f"{prefix}class_{k}": v for k, v in result.items() if k.startswith("acc_at_")}

  def metrics(self) -> dict:
    """Every ranking `config.eval` asks for (module doc)."""
    ev, out = self.config.eval, {"ret_token": self.config.eval.ret_token}
    nq, ng = len(self.labels[0]), len(self.labels[1])
    start = time.perf_counter()
    if ev.ret_token == "sa" or ev.rerank_k:
      self.ret()
      out["encode_ret_seconds"] = time.perf_counter() - start
    if ev.ret_token == "ca" or ev.rn or ev.rerank_k:
      start = time.perf_counter()
      self.rows()
      out["encode_pair_features_seconds"] = time.perf_counter() - start
    rankings = []  # (prefix, score_tile, tile, metrics' sharded input)
    if ev.ret_token == "sa":
      query, gallery = self.ret()
      rankings.append(("", retrieval_metrics.embedding_scores(query, gallery, ev.query_tile,
                                                              self.mesh), ev.query_tile, True))
    elif ev.ret_token == "ca":
      rankings.append(("", self._pair_tile("ca_ret"), ev.rn_tile, False))
    else:
      raise ValueError(f"eval.ret_token must be 'sa' or 'ca', got {ev.ret_token!r}")
    if ev.rn:
      rankings.append(("rn_", self._pair_tile("rn"), ev.rn_tile, False))
      out["rn_pairs_scored"] = float(nq * ng)
    if ev.rerank_k:
      k = min(ev.rerank_k, ng)
      sketches, photos, sketch_features, photo_features = self.rows()
      tile = zse_ranking.rerank_score_tile(
          self.model, self.params, sketches, photos, *self.ret(), sketch_features,
          photo_features, k=k, tile=ev.rn_tile, chunk=ev.rn_chunk, fp16_scores=ev.fp16_scores)
      rankings.append(("rerank_", tile, ev.rn_tile, False))
      out.update(rerank_k=float(k), rerank_pairs_scored=float(nq * k))
    for prefix, score_tile, tile, sharded in rankings:  # seconds: scoring and metrics
      start = time.perf_counter()
      out.update(self.summary(score_tile, prefix, tile, sharded))
      out[f"{prefix}seconds"] = time.perf_counter() - start
    if self.match is not None:  # class-restricted acc, Ret (cosine or CA) and RN
      for prefix, score_tile, tile, sharded in rankings:
        if sharded:
          score_tile, tile = _cosine_tile(*self.ret()), ev.rn_tile
        out.update(self.class_acc(score_tile, prefix, tile))
    if self.unseen:
      out["unseen_classes"] = list(self.unseen)
    return out

  def _pair_tile(self, score: str):
    sketches, photos, sketch_features, photo_features = self.rows()
    ev = self.config.eval
    return zse_ranking.pair_score_tile(
        self.model, self.params, sketches, photos, sketch_features, photo_features,
        tile=ev.rn_tile, chunk=ev.rn_chunk, score=score,
        fp16_scores=ev.fp16_scores and score == "rn")


def test_metrics(model, params, split, config, mesh, seen_classes=()) -> dict:
  """Every ranking `config.eval` asks for on `split`'s test set (module doc)."""
  return _TestSet(model, params, split, config, mesh, seen_classes).metrics()


class BestKeeper:
  """Keeps the parameters of the eval with the highest `metric` (an on_eval hook):
  `<workdir>/best/params.msgpack` and `<workdir>/best.json` ({"step", "metric",
  "value", "select_on"}); reads best.json back on resume."""

  def __init__(self, workdir: pathlib.Path, metric: str, select_on: str):
    self.workdir, self.metric, self.select_on = workdir, metric, select_on
    path = workdir / BEST_FILE
    self.best = json.loads(path.read_text()) if path.exists() else None

  def __call__(self, step: int, metrics: dict, params) -> None:
    if self.metric not in metrics:
      raise KeyError(f"train.select_metric {self.metric!r} is not among the eval metrics "
                     f"{sorted(metrics)}")
    value = float(metrics[self.metric])
    if self.best is not None and not value > self.best["value"]:
      return
    host = multihost_utils.process_allgather(params, tiled=True)
    self.best = {"step": step, "metric": self.metric, "value": value,
                 "select_on": self.select_on}
    logging.info("best %s so far: %.4f at step %d (selection on %s)", self.metric, value,
                 step, self.select_on)
    if jax.process_index() == 0:
      path = self.workdir / BEST_PARAMS
      path.parent.mkdir(parents=True, exist_ok=True)
      temporary = path.with_suffix(".tmp")
      temporary.write_bytes(serialization.msgpack_serialize(jax.tree.map(np.asarray, host)))
      temporary.replace(path)
      (self.workdir / BEST_FILE).write_text(json.dumps(self.best, indent=1))


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  split = sbir.load_split(config)
  if jax.process_index() == 0 and not trainer.has_checkpoint(str(workdir)):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / sbir.CONFIG_FILE).write_text(config.to_json_best_effort(indent=1))
  select_on = config.train.select_on
  if select_on == "unseen":
    logging.info("selecting on the test classes %s (as the official code does): selection "
                 "on unseen classes (leakage)", list(split.test.classes))
    train_side, heldout = split.train, None
  elif select_on == "seen_heldout":
    heldout = sbir_splits.seen_heldout_split(split, config.train.heldout_fraction)
    train_side = heldout.train
    logging.info("selecting on %s: %s", heldout.name, heldout.counts())
  else:
    raise ValueError(f"train.select_on must be 'unseen' or 'seen_heldout', got {select_on!r}")
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  model = build_model(config)
  train_iter = image_pipeline.zse_train_iterator(
      *sbir.train_sources(config, dataclasses.replace(split, train=train_side), workdir),
      global_batch_size=config.train.batch_size, seed=config.seed,
      preprocess=sbir.preprocess_of(config),
      official_off_by_one=config.data.official_off_by_one, cache=config.data.cache_images)

  def custom_eval(params) -> dict:
    out = test_metrics(model, params, split, config, mesh, split.train.classes)
    if heldout is not None:
      out.update({f"heldout_{k}": v for k, v in test_metrics(
          model, params, heldout, config, mesh).items()})
    return {k: v for k, v in out.items() if not isinstance(v, (str, list))}

  metric = config.train.select_metric
  keeper = BestKeeper(workdir, metric if select_on == "unseen" else f"heldout_{metric}",
                      select_on)
  return trainer.train_and_evaluate(
      config, str(workdir), zse_objective(model, config), train_iter, None, mesh=mesh,
      custom_eval=custom_eval, on_eval=keeper)


def _load_trained(config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """(the trained config with `config`'s split, classes and eval, the model, its latest or
  best parameters (`eval.checkpoint`), a label of the checkpoint, the mesh, the classes the
  model was trained on)."""
  if not (workdir / sbir.CONFIG_FILE).exists():
    raise FileNotFoundError(f"{workdir} holds no trained ZSE-SBIR model ({sbir.CONFIG_FILE} "
                            "missing): train first")
  trained = ml_collections.ConfigDict(json.loads((workdir / sbir.CONFIG_FILE).read_text()))
  trained.unlock()
  seen_classes = sbir.load_split(trained).train.classes
  trained.data.split, trained.data.classes, trained.eval = (config.data.split,
                                                            config.data.classes, config.eval)
  mesh = mesh_lib.make_mesh(trained.mesh.fsdp)
  model = build_model(trained)
  example = {k: np.zeros((jax.device_count(), trained.data.image_size,
                          trained.data.image_size, 3), np.float32)
             for k in ("sketch", "sketch_negative", "photo_positive", "photo_negative")}
  params = trainer.restore_params(str(workdir), zse_objective(model, trained), example,
                                  trained, mesh)
  checkpoint = str(workdir)
  if config.eval.checkpoint == "best":
    best = json.loads((workdir / BEST_FILE).read_text())
    params = serialization.from_bytes(params, (workdir / BEST_PARAMS).read_bytes())
    checkpoint = f"{workdir} best (step {best['step']}, {best['metric']} {best['value']:.4f})"
  elif config.eval.checkpoint != "latest":
    raise ValueError(f"eval.checkpoint must be 'latest' or 'best', got "
                     f"{config.eval.checkpoint!r}")
  return trained, model, params, checkpoint, mesh, seen_classes


def evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Every ranking of the workdir's latest (or best) parameters on the split's test set."""
  trained, model, params, checkpoint, mesh, seen_classes = _load_trained(config, workdir)
  # eval.rn is training's; evaluate scores RN unless told not to or untrained (ViT-Ret).
  trained.eval.rn = config.eval.evaluate_rn and trained.loss.get("kind", "zse") == "zse"
  result = {"split": config.data.split, "classes": config.data.classes, "checkpoint": checkpoint,
            **test_metrics(model, params, sbir.load_split(trained), trained, mesh,
                           seen_classes)}
  print(json.dumps(result))
  if jax.process_index() == 0:
    suffix = "_best" if config.eval.checkpoint == "best" else ""
    (workdir / f"eval_{config.data.split}{suffix}.json").write_text(json.dumps(result, indent=1))
  return result


def explain(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Token correspondences, patch replacement and retrieve figures of the trained model on the
  split's test set (`zse_explanations`), to `<workdir>/explain/`, with `explain.json`."""
  trained, model, params, checkpoint, mesh, _ = _load_trained(config, workdir)
  trained.explain = config.explain
  out_dir = workdir / "explain"
  result = {"split": config.data.split, "checkpoint": checkpoint,
            **zse_explanations.run_explain(model, params, sbir.load_split(trained), trained,
                                           mesh, out_dir)}
  if jax.process_index() == 0:
    (out_dir / "explain.json").write_text(json.dumps(result, indent=1))
  print(json.dumps({k: v for k, v in result.items() if k != "queries"}))
  return result


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Entry point of the task: dispatches on `config.mode`."""
  modes = {"train": train, "evaluate": evaluate, "explain": explain}
  if config.mode not in modes:
    raise ValueError(f"unknown mode {config.mode!r}; expected one of {list(modes)}")
  return modes[config.mode](config, pathlib.Path(workdir))
