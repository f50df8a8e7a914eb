"""Task `zse`: ZSE-SBIR trained as the official code (spec 3.5), evaluated by Ret ranking.

  train: items of the official sampler (three classes: (s, p+) a positive pair
    of one class, (s-, p-) a negative pair), loss 2 L_triplet + 4 L_rn,
    AdamW(1e-5, weight decay 1e-2) as the code, the generic trainer (exact
    resume, metrics.jsonl, TensorBoard); at every eval, Ours-Ret (the
    L2-normalised self-attention [Ret] tokens, cosine) on the split's test
    set, the unseen classes: selecting a checkpoint by it, as the code does,
    is selection on the test classes (leakage), which the log says.
  evaluate: a trained workdir on `config.data.split`'s test set, Ours-Ret and
    Ours-RN (every sketch-photo pair scored exactly, `methods/zse_ranking.py`;
    `eval.fp16_scores` ranks by the code's fp16 sigmoid scores), to
    `<workdir>/eval_<split>.json`; `eval.rn` adds Ours-RN to training's evals.
"""

from __future__ import annotations

import json
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sketchjax.data import image_pipeline
from sketchjax.methods import sbir_losses
from sketchjax.methods import zse_ranking
from sketchjax.models import encoders
from sketchjax.models import zse_sbir
from sketchjax.tasks import sbir
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer

VARIANTS = {"zse_vit_b16": zse_sbir.zse_vit_b16, "zse_small": zse_sbir.zse_small,
            "zse_mobilenet": zse_sbir.zse_mobilenet}


def build_model(config: ml_collections.ConfigDict) -> zse_sbir.ZseSbir:
  m = config.model
  if m.variant not in VARIANTS:
    raise ValueError(f"unknown model.variant {m.variant!r}; expected one of {list(VARIANTS)}")
  extra = {"freeze_mobilenet": m.freeze_mobilenet} if m.variant == "zse_mobilenet" else {}
  return VARIANTS[m.variant](image_size=config.data.image_size, dropout=m.dropout,
                             conv_stem=m.conv_stem, ca_convention=m.ca_convention,
                             token_reshape=m.token_reshape, **extra)


def zse_objective(model: zse_sbir.ZseSbir, config: ml_collections.ConfigDict
                  ) -> trainer.Objective:
  """Batches of `image_pipeline.zse_train_iterator`; init from config.model.pretrained."""
  initial = encoders.initial_variables(lambda: zse_sbir.init_variables(
      model, jax.random.key(config.seed), config.model.pretrained or None))

  def init(rng, batch):
    del rng, batch  # The initial variables are those of config.seed.
    return initial()["params"]

  def loss(params, batch, rng):
    sketches = jnp.concatenate([batch["sketch"], batch["sketch_negative"]])
    photos = jnp.concatenate([batch["photo_positive"], batch["photo_negative"]])
    logits, aux = model.apply({"params": params}, sketches, photos, train=True,
                              rngs={"dropout": rng})
    half = batch["sketch"].shape[0]
    return sbir_losses.zse_sbir_loss(logits, aux["ca_ret_sketch"][:half],
                                     aux["ca_ret_photo"][:half], aux["ca_ret_photo"][half:],
                                     config.loss.margin)

  return trainer.Objective(init=init, loss=loss, evaluate=None)


def ret_metrics(model: zse_sbir.ZseSbir, params, split, config, mesh) -> dict[str, float]:
  """Ours-Ret: cosine of the self-attention [Ret] tokens, test sketches against test photos."""

  def ret_of(modality):
    return lambda v, images: model.apply(v, images, modality, method=model.encode)["ret"]

  variables = {"params": params}
  query = sbir.embed_images(ret_of("sketch"), variables, split.test.sketches, config, mesh)
  gallery = sbir.embed_images(ret_of("photo"), variables, split.test.photos, config, mesh)
  return sbir.split_metrics(query, gallery, split, config, mesh)


def rn_metrics(model: zse_sbir.ZseSbir, params, split, config, mesh) -> dict[str, float]:
  """Ours-RN: every test sketch against every test photo through CA and RN, each
  item encoded once; keys prefixed "rn_"."""
  rows = {}
  for modality, items in (("sketch", split.test.sketches), ("photo", split.test.photos)):
    features = zse_ranking.ItemFeatures(model, params, modality)
    rows[modality] = sbir.embed_images(features.flat, params, items, config, mesh)
  labels = [[split.test.label_index(i) for i in items]
            for items in (split.test.sketches, split.test.photos)]
  result = zse_ranking.rn_metrics(model, params, rows["sketch"], rows["photo"], *labels,
                                  tile=config.eval.rn_tile, chunk=config.eval.rn_chunk,
                                  fp16_scores=config.eval.fp16_scores, mesh=mesh)
  return {f"rn_{k}": v for k, v in result.items()}


def _metrics(model, params, split, config, mesh) -> dict[str, float]:
  out = ret_metrics(model, params, split, config, mesh)
  if config.eval.rn:
    out.update(rn_metrics(model, params, split, config, mesh))
  return out


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  split = sbir.load_split(config)
  if jax.process_index() == 0 and not trainer.has_checkpoint(str(workdir)):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / sbir.CONFIG_FILE).write_text(config.to_json_best_effort(indent=1))
  logging.info("evaluating on the test classes %s: choosing a checkpoint by these numbers "
               "(as the official code does) is selection on unseen classes (leakage)",
               list(split.test.classes))
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  model = build_model(config)
  train_iter = image_pipeline.zse_train_iterator(
      *sbir.train_sources(config, split, workdir), global_batch_size=config.train.batch_size,
      seed=config.seed, preprocess=sbir.preprocess_of(config),
      official_off_by_one=config.data.official_off_by_one, cache=config.data.cache_images)
  return trainer.train_and_evaluate(
      config, str(workdir), zse_objective(model, config), train_iter, None, mesh=mesh,
      custom_eval=lambda params: _metrics(model, params, split, config, mesh))


def evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Ours-Ret and Ours-RN of the workdir's latest checkpoint on the split's test set."""
  if not (workdir / sbir.CONFIG_FILE).exists():
    raise FileNotFoundError(f"{workdir} holds no trained ZSE-SBIR model ({sbir.CONFIG_FILE} "
                            "missing): train first")
  trained = ml_collections.ConfigDict(json.loads((workdir / sbir.CONFIG_FILE).read_text()))
  trained.unlock()
  trained.data.split, trained.data.classes, trained.eval = (config.data.split,
                                                            config.data.classes, config.eval)
  trained.eval.rn = True
  mesh = mesh_lib.make_mesh(trained.mesh.fsdp)
  model = build_model(trained)
  example = {k: np.zeros((jax.device_count(), trained.data.image_size,
                          trained.data.image_size, 3), np.float32)
             for k in ("sketch", "sketch_negative", "photo_positive", "photo_negative")}
  params = trainer.restore_params(str(workdir), zse_objective(model, trained), example,
                                  trained, mesh)
  result = {"split": config.data.split, "checkpoint": str(workdir),
            **_metrics(model, params, sbir.load_split(trained), trained, mesh)}
  print(json.dumps(result))
  if jax.process_index() == 0:
    (workdir / f"eval_{config.data.split}.json").write_text(json.dumps(result, indent=1))
  return result


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Entry point of the task: dispatches on `config.mode`."""
  modes = {"train": train, "evaluate": evaluate}
  if config.mode not in modes:
    raise ValueError(f"unknown mode {config.mode!r}; expected one of {list(modes)}")
  return modes[config.mode](config, pathlib.Path(workdir))
