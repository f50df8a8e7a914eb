"""Task `sbir`: the data-dependent SBIR baseline, and retrieval as a user does it.

Modes (`config.mode`):
  train: photo and sketch encoders trained on the split's real training pairs
    (symmetric InfoNCE with negatives from every device, or triplet), with the
    generic trainer (exact resume, metrics.jsonl, TensorBoard); the retrieval
    metrics of the split's test set at every eval; `retrieval.png` at the end.
  evaluate: the workdir's latest checkpoint on the split's test set.
  evaluate_init: the initial backbones' pooled features, untrained (ImageNet
    MobileNetV2's, or a random network's): the floor a trained model must beat.
  embed: the embeddings of a gallery folder to `<workdir>/gallery.npz`
    (`embeddings` [N, D] float32, `paths`, `labels`) for a vector database.
  retrieve: the top-k photos of one query sketch (an image file, or
    `<file.ndjson>#<line>`) in a gallery folder or a gallery.npz, printed and
    drawn to `<workdir>/retrieve_<query>.png`.

Results go to `<workdir>/eval_<split>.json` (evaluate modes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sketchjax.data import image_pipeline
from sketchjax.data import image_preprocess
from sketchjax.data import sbir_splits
from sketchjax.data import tfds_sbir
from sketchjax.data.formats import image_folders
from sketchjax.data.image_items import ImageItem, Modality
from sketchjax.data.records import BadInputPolicy
from sketchjax.methods import retrieval_metrics
from sketchjax.methods import sbir_losses
from sketchjax.models import encoders
from sketchjax.tasks import sbir_figures
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer

CONFIG_FILE = "config.json"
GALLERY_FILE = "gallery.npz"


def build_model(model_config: ml_collections.ConfigDict) -> encoders.SketchPhotoEncoder:
  """The two encoders of `config.model`; BatchNorm where trained from random init."""
  return encoders.SketchPhotoEncoder(
      backbone=model_config.backbone, embed_dim=model_config.embed_dim,
      shared=model_config.shared,
      mobilenet_batch_norm=not model_config.pretrained)  # The TFLite weights are BN-folded.


def sbir_objective(model: encoders.SketchPhotoEncoder, config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh) -> trainer.Objective:
  """Stateful objective (BatchNorm statistics are the model state).

  Batches: {"sketch", "photo": float32 [B, S, S, 3], "label": int32 [B]}, row i
  a training pair. The initial variables are `encoders.init_encoder_variables`
  of `config.seed` (random, then the backbones read from
  `config.model.pretrained`), computed once on the host; init returns them as
  constants (so a ViT-B/16 init puts its 86 M weights in the init program).
  """
  initial = encoders.initial_variables(lambda: encoders.init_encoder_variables(
      model, jax.random.key(config.seed), config.data.image_size,
      config.model.pretrained or None))

  def init(rng, batch):
    del rng, batch  # The initial variables are those of config.seed.
    return encoders.split_params(initial())

  def loss(params, model_state, batch, rng):
    (sketch, photo), updates = model.apply({"params": params, **model_state}, batch["sketch"],
                                           batch["photo"], train=True,
                                           mutable=list(model_state))
    if config.loss.name == "info_nce":
      value = sbir_losses.sharded_info_nce_loss(sketch, photo, config.loss.temperature, mesh)
    elif config.loss.name == "triplet":
      value = sbir_losses.triplet_loss(sketch, photo, batch["label"], rng, config.loss.margin)
    else:
      raise ValueError(f"unknown loss.name {config.loss.name!r}; expected 'info_nce' or 'triplet'")
    metrics = {"pair_cosine": jnp.mean(jnp.sum(sketch * photo, axis=-1))}
    return value, (metrics, {**model_state, **updates})

  return trainer.Objective(init=init, loss=loss, evaluate=None, stateful=True)


def load_split(config: ml_collections.ConfigDict) -> sbir_splits.SbirSplit:
  """The split of `config.data.split` from the configured folders, counts logged."""
  data = config.data
  policy = BadInputPolicy(data.on_bad_image)
  split = sbir_splits.make_split(data.split, sbir_splits.DataDirs.under(data.dir), policy=policy)
  if data.classes:
    split = _keep_classes(split, data.classes.split(","))
  logging.info("split %s: %s (%d train / %d test classes)%s", split.name, split.counts(),
               len(split.train.classes), len(split.test.classes),
               "" if not policy.counts else f"; {policy.summary()}")
  return split


def _keep_classes(split: sbir_splits.SbirSplit, classes: Sequence[str]) -> sbir_splits.SbirSplit:
  """The split restricted to `classes` (on both sides; labels renumbered)."""

  def side(s: sbir_splits.SplitSide) -> sbir_splits.SplitSide:
    keep = [c for c in s.classes if c in classes]
    return sbir_splits.SplitSide(tuple(i for i in s.photos if i.label in keep),
                                 tuple(i for i in s.sketches if i.label in keep), tuple(keep))

  unknown = sorted(set(classes) - set(split.train.classes) - set(split.test.classes))
  if unknown:
    raise ValueError(f"data.classes: {unknown} are not classes of the {split.name} split")
  return dataclasses.replace(split, train=side(split.train), test=side(split.test))


def train_sources(config: ml_collections.ConfigDict, split: sbir_splits.SbirSplit,
                  workdir: pathlib.Path) -> tuple[Any, Any]:
  """(photo source, sketch source) of the split's training side: the files, or
  the TFDS build of the split (written once under data.tfds_dir)."""
  data = config.data
  if data.source == "files":
    return (image_pipeline.ItemSource(split.train.photos, split.train.classes),
            image_pipeline.ItemSource(split.train.sketches, split.train.classes))
  if data.source != "tfds":
    raise ValueError(f"unknown data.source {data.source!r}; expected 'files' or 'tfds'")
  if data.classes:
    raise ValueError("data.classes restricts the split in memory; the TFDS build holds the "
                     "whole split: use data.source=files with it")
  builder = tfds_sbir.build(data.tfds_dir or workdir / "tfds", data.dir, data.split)
  return tuple(tfds_sbir.load_split(builder, f"train_{m}") for m in ("photo", "sketch"))


def preprocess_of(config: ml_collections.ConfigDict) -> image_preprocess.Preprocess:
  return image_preprocess.Preprocess(config.data.preprocess, config.data.image_size)


def _example_batch(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  size = config.data.image_size
  images = np.zeros((jax.device_count(), size, size, 3), np.float32)
  return {"sketch": images, "photo": images, "label": np.zeros(len(images), np.int32)}


def embed_items(model: encoders.SketchPhotoEncoder, variables: dict, items: Sequence[ImageItem],
                modality: Modality, config: ml_collections.ConfigDict,
                mesh: jax.sharding.Mesh, backbone_features: bool = False) -> np.ndarray:
  """[len(items), D] float32 unit embeddings, in the order of `items`; with
  `backbone_features`, the backbone's own features [len(items), F] (pooled,
  before the projection), which the metrics L2-normalise."""
  method = model.encode_photo if modality == "photo" else model.encode_sketch

  def features_of(variables, images):
    embeddings, aux = method.__func__(model.bind(variables), images, train=False)
    return aux["features"] if backbone_features else embeddings

  return embed_images(features_of, variables, items, config, mesh)


def embed_images(features_of: Callable[[Any, jax.Array], jax.Array], variables: Any,
                 items: Sequence[ImageItem], config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh) -> np.ndarray:
  """features_of(variables, images [B, S, S, 3]) -> [B, D] over every item, in
  their order, preprocessed as `config.data` says: [len(items), D] float32."""
  # Every process gets every row (replicated), with its global index and weight.
  encode = jax.jit(lambda v, b: {"out": features_of(v, b["image"]), "index": b["index"],
                                  "weight": b["weight"]},
                   out_shardings=mesh_lib.replicated(mesh))
  out = None
  batches = image_pipeline.image_eval_batches(
      image_pipeline.ItemSource(items, sorted({i.label for i in items})),
      global_batch_size=config.train.eval_batch_size, preprocess=preprocess_of(config))
  with jax.set_mesh(mesh):
    for batch in batches:
      result = jax.device_get(encode(variables, mesh_lib.to_global(batch, mesh)))
      if out is None:
        out = np.zeros((len(items), result["out"].shape[1]), np.float32)
      keep = result["weight"] > 0
      out[result["index"][keep]] = result["out"][keep]
  return out


def _instance_matches(queries: Sequence[ImageItem], gallery: Sequence[ImageItem]) -> np.ndarray:
  """[Nq] gallery index of each query's own photo (fine-grained), -1 if absent."""
  where = {item.instance: i for i, item in enumerate(gallery)}
  return np.array([where.get(q.instance, -1) for q in queries], np.int64)


def evaluate_split(model: encoders.SketchPhotoEncoder, variables: dict,
                   split: sbir_splits.SbirSplit, config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh, backbone_features: bool = False) -> dict[str, float]:
  """Retrieval metrics of the test sketches (queries) against the test photos."""
  sketches, photos = split.test.sketches, split.test.photos
  query = embed_items(model, variables, sketches, "sketch", config, mesh, backbone_features)
  gallery = embed_items(model, variables, photos, "photo", config, mesh, backbone_features)
  return split_metrics(query, gallery, split, config, mesh)


def split_metrics(query: np.ndarray, gallery: np.ndarray, split: sbir_splits.SbirSplit,
                  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Retrieval metrics of embeddings of the split's test sketches [Nq, D] and
  test photos [Ng, D] (in the split's order)."""
  sketches, photos = split.test.sketches, split.test.photos
  labels = [np.array([split.test.label_index(i) for i in items]) for items in (sketches, photos)]
  match = _instance_matches(sketches, photos) if split.relevance == "instance" else None
  return retrieval_metrics.retrieval_metrics(
      query, labels[0], gallery, labels[1], query_match=match, tile=config.eval.query_tile,
      mesh=mesh)


def save_split_figure(model, variables, split: sbir_splits.SbirSplit, config,
                       mesh, path: pathlib.Path) -> None:
  """The first test sketch of a few classes and its top-10 test photos."""
  sketches, photos = split.test.sketches, split.test.photos
  step = max(1, len(sketches) // max(1, config.eval.figure_queries))
  queries = list(sketches[::step][:config.eval.figure_queries])
  query = embed_items(model, variables, queries, "sketch", config, mesh)
  gallery = embed_items(model, variables, photos, "photo", config, mesh)
  top, _ = retrieval_metrics.top_k_retrieval(query, gallery, min(10, len(photos)), mesh=mesh)
  relevant = ((lambda q, p: q.instance == p.instance) if split.relevance == "instance" else
              (lambda q, p: q.label == p.label))
  sbir_figures.save_retrieval_figure(
      path, [image_folders.load_image(q) for q in queries], [q.label for q in queries],
      [[image_folders.load_image(photos[j]) for j in row] for row in top],
      [[photos[j].label for j in row] for row in top],
      [[relevant(q, photos[j]) for j in row] for q, row in zip(queries, top)])


def _write_result(workdir: pathlib.Path, name: str, result: dict) -> None:
  print(json.dumps(result))
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text(json.dumps(result, indent=1))


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Trains on the split's training pairs; evaluates retrieval on its test set."""
  split = load_split(config)
  if jax.process_index() == 0 and not trainer.has_checkpoint(str(workdir)):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=1))
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  model = build_model(config.model)
  train_iter = image_pipeline.pair_train_iterator(
      *train_sources(config, split, workdir), global_batch_size=config.train.batch_size, seed=config.seed,
      preprocess=preprocess_of(config), pairing=split.pairing,
      cache=config.data.cache_images)
  objective = sbir_objective(model, config, mesh)

  def custom_eval(variables) -> dict[str, float]:
    params, model_state = variables
    return evaluate_split(model, {"params": params, **model_state}, split, config, mesh)

  metrics = trainer.train_and_evaluate(config, str(workdir), objective, train_iter, None,
                                       mesh=mesh, custom_eval=custom_eval)
  variables = _restore(workdir, model, objective, config, mesh)
  if jax.process_index() == 0:
    save_split_figure(model, variables, split, config, mesh, workdir / "retrieval.png")
  return metrics


def _restore(workdir: pathlib.Path, model, objective, config, mesh) -> dict:
  params, model_state = trainer.restore_params(str(workdir), objective,
                                               _example_batch(config), config, mesh)
  return {"params": params, **model_state}


def load_trained(workdir: pathlib.Path):
  """(model, variables, training config, mesh) of a trained workdir; the model is
  rebuilt from the workdir's own config.json."""
  if not (workdir / CONFIG_FILE).exists():
    raise FileNotFoundError(f"{workdir} holds no trained SBIR model ({CONFIG_FILE} missing): "
                            "train first with --config.mode=train")
  trained = ml_collections.ConfigDict(json.loads((workdir / CONFIG_FILE).read_text()))
  mesh = mesh_lib.make_mesh(trained.mesh.fsdp)
  model = build_model(trained.model)
  return model, _restore(workdir, model, sbir_objective(model, trained, mesh), trained,
                         mesh), trained, mesh


def evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Retrieval metrics of the trained workdir on `config.data.split`'s test set."""
  model, variables, trained, mesh = load_trained(workdir)
  trained.unlock()
  trained.data = config.data  # Evaluate on the split asked for, with the trained preprocessing.
  trained.data.preprocess, trained.data.image_size = (config.data.preprocess,
                                                      config.data.image_size)
  result = {"split": config.data.split, "checkpoint": str(workdir),
            **evaluate_split(model, variables, load_split(config), trained, mesh)}
  _write_result(workdir, f"eval_{config.data.split}.json", result)
  return result


def evaluate_init(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Retrieval metrics of the initial, untrained backbones' pooled features
  (ImageNet MobileNetV2's 1280-d, or a random network's): the floor."""
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  model = build_model(config.model)
  objective = sbir_objective(model, config, mesh)
  params, model_state = jax.jit(objective.init)(jax.random.key(config.seed),
                                                _example_batch(config))
  split = load_split(config)
  result = {"split": config.data.split, "checkpoint": "untrained",
            "pretrained": config.model.pretrained,
            **evaluate_split(model, {"params": params, **model_state}, split, config, mesh,
                             backbone_features=True)}
  _write_result(workdir, f"eval_init_{config.data.split}.json", result)
  return result


def gallery_items(folder: str | pathlib.Path) -> list[ImageItem]:
  """The images of a gallery folder: `<class>/<file>` labelled with the class,
  files directly in the folder with label ""."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"no gallery folder at {folder}: set --config.retrieve.gallery_dir")
  files = sorted(pathlib.Path(root, name) for root, _, names in os.walk(folder, followlinks=True)
                 for name in names if name.lower().endswith(image_folders.IMAGE_SUFFIXES))
  if not files:
    raise ValueError(f"{folder}: no images ({', '.join(image_folders.IMAGE_SUFFIXES)}) in the "
                     "gallery folder")
  return [ImageItem(str(p), p.parent.name if p.parent != folder else "", "photo") for p in files]


def embed(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Writes `<workdir>/gallery.npz`: the gallery folder's photo embeddings."""
  model, variables, trained, mesh = load_trained(workdir)
  items = gallery_items(config.retrieve.gallery_dir)
  embeddings = embed_items(model, variables, items, "photo", trained, mesh)
  path = workdir / GALLERY_FILE
  if jax.process_index() == 0:
    np.savez(path, embeddings=embeddings, paths=np.array([i.path for i in items]),
             labels=np.array([i.label for i in items]))
  logging.info("wrote %d embeddings of %s to %s", len(items), config.retrieve.gallery_dir, path)
  return {"gallery": str(config.retrieve.gallery_dir), "images": len(items), "file": str(path)}


def _query_item(query: str) -> ImageItem:
  """A query: an image file (label: its folder's name) or `<file.ndjson>#<line>`."""
  path, _, line = query.partition("#")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"no query file at {path}: set --config.retrieve.query to a sketch "
                            "image or to <file.ndjson>#<line>")
  if path.endswith(".ndjson"):
    if not line.isdigit():
      raise ValueError(f"--config.retrieve.query={query}: name the drawing as "
                       "<file.ndjson>#<line> (1-based)")
    return ImageItem(query, pathlib.Path(path).stem, "sketch")
  return ImageItem(path, pathlib.Path(path).parent.name, "sketch")


def _load_gallery(config, model, variables, trained, mesh) -> tuple[np.ndarray, list[ImageItem]]:
  if config.retrieve.gallery_npz:
    with np.load(config.retrieve.gallery_npz) as f:
      items = [ImageItem(str(p), str(l), "photo") for p, l in zip(f["paths"], f["labels"])]
      return f["embeddings"], items
  items = gallery_items(config.retrieve.gallery_dir)
  return embed_items(model, variables, items, "photo", trained, mesh), items


def retrieve(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Top-k gallery photos of one query sketch, printed and drawn."""
  model, variables, trained, mesh = load_trained(workdir)
  query = _query_item(config.retrieve.query)
  gallery, items = _load_gallery(config, model, variables, trained, mesh)
  query_emb = embed_items(model, variables, [query], "sketch", trained, mesh)
  k = min(config.retrieve.top_k, len(items))
  top, scores = retrieval_metrics.top_k_retrieval(query_emb, gallery, k, mesh=mesh)
  labelled = query.label in {item.label for item in items}
  hits = [items[j].label == query.label if labelled else None for j in top[0]]
  ranked = [{"rank": r + 1, "path": items[j].path, "label": items[j].label,
             "score": float(s), "hit": hit}
            for r, (j, s, hit) in enumerate(zip(top[0], scores[0], hits))]
  for row in ranked:
    print(f"{row['rank']:3d}  {row['score']:+.4f}  {row['label'] or '-':>16s}  {row['path']}"
          + ("" if row["hit"] is None else ("  hit" if row["hit"] else "  miss")))
  name = pathlib.Path(query.path.partition("#")[0]).stem.replace(" ", "_")
  figure = workdir / f"retrieve_{name}{'_' + query.path.partition('#')[2] if '#' in query.path else ''}.png"
  if jax.process_index() == 0:
    sbir_figures.save_retrieval_figure(
        figure, [image_folders.load_image(query)], [query.label or "query"],
        [[image_folders.load_image(items[j]) for j in top[0][:10]]],
        [[items[j].label for j in top[0][:10]]], [hits[:10]])
  return {"query": config.retrieve.query, "figure": str(figure), "results": ranked}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Entry point of the task: dispatches on `config.mode`."""
  modes = {"train": train, "evaluate": evaluate, "evaluate_init": evaluate_init,
           "embed": embed, "retrieve": retrieve}
  if config.mode not in modes:
    raise ValueError(f"unknown mode {config.mode!r}; expected one of {list(modes)}")
  return modes[config.mode](config, pathlib.Path(workdir))
