"""The frozen networks of CrossX-DFL: training them (the method's one
data-dependent step) and loading them as `crossx_dfl.Teachers`.

A teacher is an `encoders.ImageClassifier` trained in its own workdir
(`mode=teacher`, `teacher.kind`):
  photo / sketch   the split's training photos / sketches, its classes;
  unified          both modalities, one classifier (the official main.py);
  modality         one logit, photo 0 / sketch 1 (the modality network).
Each workdir holds `config.json` and the trainer's checkpoints; `load_teacher`
rebuilds the classifier from them.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sketchjax.data import image_pipeline
from sketchjax.methods import crossx_dfl
from sketchjax.models import encoders
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer

KINDS = ("photo", "sketch", "unified", "modality")
CONFIG_FILE = "config.json"


def build_classifier(teacher: ml_collections.ConfigDict, num_classes: int
                     ) -> encoders.ImageClassifier:
  return encoders.ImageClassifier(teacher.backbone, num_classes,
                                  mobilenet_batch_norm=not teacher.pretrained)


def _images_and_labels(batch: dict, kind: str) -> tuple[jax.Array, jax.Array]:
  """The classifier's inputs [N, S, S, 3] and int targets [N] from a pair batch."""
  if kind == "photo":
    return batch["photo"], batch["label"]
  if kind == "sketch":
    return batch["sketch"], batch["label"]
  images = jnp.concatenate([batch["photo"], batch["sketch"]])
  if kind == "unified":
    return images, jnp.concatenate([batch["label"], batch["label"]])
  if kind == "modality":
    count = batch["photo"].shape[0]
    return images, jnp.concatenate([jnp.zeros(count, jnp.int32), jnp.ones(count, jnp.int32)])
  raise ValueError(f"unknown teacher.kind {kind!r}; expected one of {KINDS}")


def classifier_loss(logits: jax.Array, targets: jax.Array, kind: str) -> jax.Array:
  """Cross-entropy; BCE-with-logits on the single logit of the modality network."""
  if kind == "modality":
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits[:, 0], targets.astype(jnp.float32)))
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))


def predictions(logits: jax.Array, kind: str) -> jax.Array:
  """Predicted classes [N]; the modality network says sketch when its logit > 0."""
  return (logits[:, 0] > 0).astype(jnp.int32) if kind == "modality" else jnp.argmax(logits, -1)


def teacher_objective(model: encoders.ImageClassifier, config: ml_collections.ConfigDict
                      ) -> trainer.Objective:
  """Stateful (BatchNorm) classifier objective on pair batches, ImageNet init
  from `config.teacher.pretrained` where given."""
  kind = config.teacher.kind
  initial: list[dict] = []

  def init(rng, batch):
    del rng  # The initial variables are those of config.seed.
    if not initial:
      initial.append(jax.device_get(encoders.init_encoder_variables(
          model, jax.random.key(config.seed), batch["photo"].shape[1],
          config.teacher.pretrained or None)))
    variables = jax.tree.map(jnp.asarray, initial[0])
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}

  def loss(params, model_state, batch, rng):
    del rng
    images, targets = _images_and_labels(batch, kind)
    (logits, _), updates = model.apply({"params": params, **model_state}, images, train=True,
                                       mutable=list(model_state))
    accuracy = jnp.mean(predictions(logits, kind) == targets)
    return classifier_loss(logits, targets, kind), ({"accuracy": accuracy},
                                                    {**model_state, **updates})

  return trainer.Objective(init=init, loss=loss, evaluate=None, stateful=True)


def accuracy(model, variables: dict, source, kind: str, config: ml_collections.ConfigDict,
             preprocess, mesh, target: int | None = None) -> float:
  """Top-1 accuracy on one image source (labels from the source, or `target`
  for every image: the modality network's 0 / 1)."""
  step = jax.jit(lambda v, b: {"predicted": predictions(model.apply(v, b["image"])[0], kind),
                               "label": b["label"], "weight": b["weight"]},
                 out_shardings=mesh_lib.replicated(mesh))
  correct = total = 0.0
  with jax.set_mesh(mesh):
    for batch in image_pipeline.image_eval_batches(
        source, global_batch_size=config.train.eval_batch_size, preprocess=preprocess):
      out = jax.device_get(step(variables, mesh_lib.to_global(batch, mesh)))
      labels = out["label"] if target is None else np.full_like(out["label"], target)
      correct += float(np.sum((out["predicted"] == labels) * out["weight"]))
      total += float(np.sum(out["weight"]))
  return correct / max(total, 1.0)


def load_teacher(workdir: str | pathlib.Path
                 ) -> tuple[encoders.ImageClassifier, dict, ml_collections.ConfigDict]:
  """(classifier, variables, its training config) of a teacher workdir."""
  workdir = pathlib.Path(workdir)
  if not (workdir / CONFIG_FILE).exists():
    raise FileNotFoundError(f"{workdir} holds no trained teacher ({CONFIG_FILE} missing): "
                            "train one with --config.mode=teacher")
  trained = ml_collections.ConfigDict(json.loads((workdir / CONFIG_FILE).read_text()))
  model = build_classifier(trained.teacher, trained.teacher.num_classes)
  size = trained.data.image_size
  images = np.zeros((jax.device_count(), size, size, 3), np.float32)
  example = {"photo": images, "sketch": images, "label": np.zeros(len(images), np.int32)}
  params, state = trainer.restore_params(str(workdir), teacher_objective(model, trained),
                                         example, trained)
  return model, jax.device_get({"params": params, **state}), trained


def _frozen(model: encoders.ImageClassifier, name: str, size: int) -> crossx_dfl.Frozen:
  def apply(constants: Any, images: jax.Array):
    logits, aux = model.apply(constants[name], crossx_dfl.resize(images, size), train=False)
    return logits, aux["features"]
  return apply


def _proxies(name: str):
  return lambda constants: (constants[name]["params"]["classifier"]["kernel"],
                            constants[name]["params"]["classifier"]["bias"])


def load_teachers(config: ml_collections.ConfigDict, classes: tuple[str, ...]
                  ) -> tuple[crossx_dfl.Teachers, dict]:
  """Teachers of `config.teachers` (workdirs of mode=teacher) and their constants.

  Both classifiers must know the retrieval classes `classes` in that order
  (trained on the same split); `teachers.modality` "" leaves L_modal out.
  """
  constants, frozen = {}, {}
  for name in ("photo", "sketch", "modality"):
    path = config.teachers[name]
    if not path:
      if name != "modality":
        raise ValueError(f"config.teachers.{name} is empty: give the workdir of a trained "
                         f"{name} (or unified) teacher")
      continue
    model, variables, trained = load_teacher(path)
    if name != "modality" and tuple(trained.teacher.classes) != tuple(classes):
      raise ValueError(f"teacher {path} knows the classes {list(trained.teacher.classes)}, the "
                       f"retrieval uses {list(classes)}: train it on the same split and classes")
    constants[name] = variables
    frozen[name] = _frozen(model, name, trained.data.image_size)
  teachers = crossx_dfl.Teachers(photo=frozen["photo"], sketch=frozen["sketch"],
                                 modality=frozen.get("modality"),
                                 photo_proxies=_proxies("photo"),
                                 sketch_proxies=_proxies("sketch"))
  return teachers, constants
