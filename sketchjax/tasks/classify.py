"""Sketch classification: train or evaluate SketchXAINet or the raster CNN.

`run(config, workdir)` with `config.mode`:
  train     train on the configured data, evaluate periodically, checkpoint,
            and leave metrics.jsonl, TensorBoard events, checkpoints,
            classes.json and predictions.png (test sketches with their
            predicted classes) in the workdir.
  evaluate  restore the latest checkpoint of the workdir and report top-1 and
            top-5 on `config.data.eval_dir`, a folder of official QuickDraw
            files whose class is the file name (written to eval_<name>.json);
            with data.unknown_classes="skip", files of classes the model does
            not know are skipped and listed (skipped_classes). With
            model.kind=doodlenet the pretrained doodleNet of model.path is
            evaluated instead, on eval_dir or the configured test split
            (classify_doodlenet.py).
  learning_curve  evaluate every kept checkpoint of a trained workdir on that
            run's own test split and write top-1/top-5 against the training
            drawings seen (step x batch size) to learning_curve.json and
            learning_curve.png.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sketchjax.data import pipeline, procedural, tokenize
from sketchjax.data import quickdraw_sources
from sketchjax.models import raster_classifier, sketchxainet
from sketchjax.sketch import plot
from sketchjax.sketch.sketch import from_stroke3
from sketchjax.tasks import classify_doodlenet, classify_figures
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer

CLASSES_FILE = "classes.json"
CONFIG_FILE = "config.json"


def build_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The classifier named by `model_config.kind`."""
  if model_config.kind == "raster_cnn":
    return raster_classifier.RasterClassifier(
        num_classes=num_classes, image_size=model_config.image_size,
        widths=tuple(model_config.cnn_widths), norm_groups=min(32, *model_config.cnn_widths))
  if model_config.kind != "sketchxainet":
    raise ValueError(f"unknown model.kind {model_config.kind!r}; "
                     "expected 'sketchxainet' or 'raster_cnn'")
  sizes = {"tiny": (192, 12, 3, 768), "base": (768, 12, 12, 3072),
           "custom": (model_config.hidden, model_config.num_layers,
                      model_config.num_heads, model_config.mlp_dim)}
  if model_config.size not in sizes:
    raise ValueError(f"unknown model.size {model_config.size!r}; expected one of {list(sizes)}")
  hidden, layers, heads, mlp = sizes[model_config.size]
  return sketchxainet.SketchXAINet(
      num_classes=num_classes, hidden=hidden, num_layers=layers, num_heads=heads,
      mlp_dim=mlp, dropout=model_config.dropout,
      attention_dropout=model_config.attention_dropout,
      use_shape=model_config.use_shape, use_location=model_config.use_location,
      use_order=model_config.use_order, mask_padding=model_config.mask_padding,
      dtype=jnp.dtype(model_config.dtype))


def classification_objective(model: nn.Module) -> trainer.Objective:
  """Weighted cross-entropy training and top-1/top-5 evaluation of `model`."""

  def init(rng, batch):
    return model.init({"params": rng, "dropout": rng}, batch, train=False)["params"]

  def weighted_ce(logits, batch):
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["label"])
    return ce * batch["weight"]

  def loss(params, batch, rng):
    logits, _ = model.apply({"params": params}, batch, train=True,
                            rngs={"dropout": rng})
    weight_sum = jnp.maximum(batch["weight"].sum(), 1.0)
    mean_ce = weighted_ce(logits, batch).sum() / weight_sum
    top1 = (jnp.argmax(logits, -1) == batch["label"]) * batch["weight"]
    return mean_ce, {"loss": mean_ce, "accuracy": top1.sum() / weight_sum}

  def evaluate(params, batch):
    logits, _ = model.apply({"params": params}, batch, train=False)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    hit = top5 == batch["label"][:, None]
    return {"loss": weighted_ce(logits, batch).sum(),
            "top1": (hit[:, 0] * batch["weight"]).sum(),
            "top5": (hit.any(-1) * batch["weight"]).sum(),
            "count": batch["weight"].sum()}

  return trainer.Objective(init=init, loss=loss, evaluate=evaluate)


def tokenizer_config(config: ml_collections.ConfigDict) -> tokenize.TokenizerConfig:
  """Tokeniser settings; strokes are packed per local device and micro-batch."""
  t = config.tokenizer
  return tokenize.TokenizerConfig(
      max_strokes=t.max_strokes,
      stroke_buckets=tuple(t.stroke_buckets) if t.bucket_strokes else None,
      point_buckets=tuple(t.point_buckets),
      num_shards=jax.local_device_count() * config.train.microbatches,
      bucket_packed_rows=t.get("bucket_packed_rows", False),  # absent in older runs' configs
      slot_points=config.model.kind != "sketchxainet")  # it reads the packed rows


def load_sources(config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """(train source, test source, class names) of `config.data.source`."""
  data = config.data
  if data.source == "procedural":
    train = procedural.ProceduralSource(data.procedural_train_size, seed=config.seed,
                                        num_classes=data.procedural_classes)
    test = procedural.ProceduralSource(data.procedural_test_size, seed=config.seed + 1,
                                       num_classes=data.procedural_classes)
    return train, test, train.class_names
  if data.source == "quickdraw":
    return quickdraw_sources.train_test_sources(config, workdir)
  raise ValueError(f"unknown data.source {data.source!r}; expected 'procedural' or 'quickdraw'")


def _save_prediction_figure(model, params, source, class_names: Sequence[str],
                            config, path: pathlib.Path) -> None:
  """Draws the first test sketches titled 'predicted (true)', wrong ones in red."""
  count = min(config.train.figure_sketches, len(source))
  records = [source[i] for i in range(count)]
  examples = [pipeline.decode(r) for r in records]
  batch = tokenize.tokenize_batch([e.sketch for e in examples],
                                  [e.label for e in examples],
                                  dataclasses.replace(tokenizer_config(config), num_shards=1))
  logits, _ = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))(
      jax.device_get(params), batch)
  predicted = np.asarray(jnp.argmax(logits, -1))
  titles = [f"{class_names[p]}\n({class_names[e.label]})" for p, e in zip(predicted, examples)]
  colors = ["black" if p == e.label else "red" for p, e in zip(predicted, examples)]
  plot.save_sketch_grid([from_stroke3(np.asarray(r["stroke3"])) for r in records],
                        titles, path, title_colors=colors)


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Trains, evaluates and draws the prediction figure; returns final metrics."""
  train_source, test_source, class_names = load_sources(config, workdir)
  logging.info("%d classes, %d training and %d test sketches", len(class_names),
               len(train_source), len(test_source))
  if jax.process_index() == 0 and not trainer.has_checkpoint(str(workdir)):
    # A fresh run records what it trains; a resumed one keeps the record of the
    # checkpoints (a run with another model is refused by the restore).
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CLASSES_FILE).write_text(json.dumps(list(class_names)))
    (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=1))
  model = build_model(config.model, len(class_names))
  tokenizer = tokenizer_config(config)
  train_stats, eval_stats = tokenize.TokenizeStats(), tokenize.TokenizeStats()
  train_iter = pipeline.train_iterator(
      train_source, global_batch_size=config.train.batch_size, seed=config.seed,
      tokenizer=tokenizer, stats=train_stats,
      augmentation=pipeline.Augmentation(**config.data.augment.to_dict()))

  def make_eval_iter():
    return pipeline.eval_batches(test_source, global_batch_size=config.train.eval_batch_size,
                                 tokenizer=tokenizer, stats=eval_stats)

  objective = classification_objective(model)
  metrics = trainer.train_and_evaluate(config, str(workdir), objective, train_iter,
                                       make_eval_iter)
  tokenize.log_stats(train_stats, "training")
  tokenize.log_stats(eval_stats, "evaluation")
  params = trainer.restore_params(str(workdir), objective, next(iter(make_eval_iter())),
                                  config)  # collective: every process restores
  if jax.process_index() == 0:
    _save_prediction_figure(model, params, test_source, class_names, config,
                            workdir / "predictions.png")
  return metrics


def _trained_model(workdir: pathlib.Path):
  """(model, class names, training config) rebuilt from a trained workdir's own
  config.json, so callers (the evaluate mode, SLI, attribution) need not repeat
  the training flags."""
  missing = [f for f in (CLASSES_FILE, CONFIG_FILE) if not (workdir / f).exists()]
  if missing:
    raise FileNotFoundError(f"{workdir} holds no trained model ({', '.join(missing)} "
                            "missing): train first with --config.mode=train")
  class_names = json.loads((workdir / CLASSES_FILE).read_text())
  config = ml_collections.ConfigDict(json.loads((workdir / CONFIG_FILE).read_text()))
  return build_model(config.model, len(class_names)), class_names, config


def _restore(workdir: pathlib.Path, model, config, step: int | None = None):
  example = tokenize.tokenize_batch([pipeline.decode({"stroke3": [[0, 0, 1]], "label": 0}).sketch],
                                    [0], tokenize.TokenizerConfig())
  return trainer.restore_params(str(workdir), classification_objective(model), example,
                                config, step=step)


def load_trained(workdir: str | pathlib.Path, step: int | None = None):
  """(model, params, class names, training config) of a trained workdir, the
  parameters of the checkpoint of `step` (default: the latest)."""
  workdir = pathlib.Path(workdir)
  model, class_names, config = _trained_model(workdir)
  return model, _restore(workdir, model, config, step), class_names, config


def learning_curve(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Top-1/top-5 of every kept checkpoint on the training run's own test split,
  against the training drawings seen; learning_curve.json and .png in workdir."""
  model, class_names, trained = _trained_model(workdir)
  _, test_source, _ = load_sources(trained, workdir)
  steps = trainer.checkpoint_steps(str(workdir))
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
  objective, mesh = classification_objective(model), mesh_lib.make_mesh(config.mesh.fsdp)
  rows = []
  for step in steps:
    batches = pipeline.eval_batches(test_source, global_batch_size=config.train.eval_batch_size,
                                    tokenizer=tokenizer_config(trained))
    metrics = trainer.evaluate(config, _restore(workdir, model, trained, step), objective,
                               batches, mesh)
    rows.append({"step": step, "drawings_seen": step * trained.train.batch_size, **metrics})
    logging.info("step %d (%d drawings seen): top-1 %.4f, top-5 %.4f on %d test drawings",
                 step, rows[-1]["drawings_seen"], metrics["top1"], metrics["top5"],
                 metrics["count"])
  result = {"workdir": str(workdir), "classes": len(class_names), "rows": rows}
  if jax.process_index() == 0:
    (workdir / "learning_curve.json").write_text(json.dumps(result, indent=1))
    classify_figures.save_learning_curves({workdir.name: rows}, workdir / "learning_curve.png")
  print(json.dumps(result))
  return result


def evaluate_folder(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Top-1/top-5 of the workdir's latest checkpoint on `config.data.eval_dir`."""
  model, params, class_names, trained_config = load_trained(workdir)
  source, skipped = quickdraw_sources.folder_source(config, class_names)
  objective = classification_objective(model)
  stats = tokenize.TokenizeStats()
  batches = pipeline.eval_batches(source, global_batch_size=config.train.eval_batch_size,
                                  tokenizer=tokenizer_config(trained_config), stats=stats)
  metrics = trainer.evaluate(config, params, objective, batches,
                             mesh_lib.make_mesh(config.mesh.fsdp))
  tokenize.log_stats(stats, "evaluation")
  result = {"eval_dir": str(config.data.eval_dir), "sketches": len(source),
            **{k: float(v) for k, v in metrics.items()}}
  if skipped:
    result["skipped_classes"] = skipped
  print(json.dumps(result))
  if jax.process_index() == 0:
    name = pathlib.Path(config.data.eval_dir).name.replace(" ", "_")
    (workdir / f"eval_{name}.json").write_text(json.dumps(result, indent=1))
  return result


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Entry point of the task: dispatches on `config.mode`."""
  modes = {"train": train, "evaluate": evaluate_folder, "learning_curve": learning_curve}
  if config.mode not in modes:
    raise ValueError(f"unknown mode {config.mode!r}; expected one of {list(modes)}")
  if config.model.kind == "doodlenet":
    if config.mode != "evaluate":
      raise ValueError("model.kind=doodlenet is pretrained: use it with --config.mode=evaluate")
    return classify_doodlenet.evaluate(config, pathlib.Path(workdir))
  return modes[config.mode](config, pathlib.Path(workdir))
