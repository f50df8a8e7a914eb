"""The frozen networks of CrossX-DFL: training them (the method's one
data-dependent step) and loading them as `crossx_dfl.Teachers`.

A teacher is an `encoders.ImageClassifier` trained in its own workdir
(`mode=teacher`, `teacher.kind`):
  photo / sketch   the split's training photos / sketches, its classes;
  unified          both modalities, one classifier (the official main.py);
  modality         one logit, photo 0 / sketch 1 (the modality network).
Each workdir holds `config.json` and the trainer's checkpoints; `load_teacher`
rebuilds the classifier from them.

Or a teacher nobody trained on our data (the fully data-free setting):
  a `.tflite` file   ImageNet MobileNetV2 as the photo teacher: a retrieval
                     class's logit is the logsumexp of the logits of its
                     ImageNet labels (`imagenet_classes.py`), its proxy the mean
                     of their classifier columns;
  a doodleNet folder (model.json) as the sketch teacher: 28x28 grey bitmaps,
                     classes by QuickDraw name (`sbir_splits.QUICKDRAW_TO_SKETCHY`);
                     its 512-d features have no student counterpart, so no L_adv
                     on that side.
The two teachers may know different classes (partial overlap): L_align
compares the classes they share, each pseudo-label lives in its teacher's
own classes.

`averaged_teacher` is the "averaging weights" baseline's one network: the photo
and the sketch teacher with their variables averaged element-wise.

`with_statistics` gives the teachers the feature-statistics loss of the
meta-data baseline (`feature_statistics.py`): against their BatchNorm running
statistics, or, for BN-folded teachers, against statistics recorded once on
their training images (the meta-data a teacher would ship with).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sketchjax.data import image_pipeline
from sketchjax.data import imagenet_classes
from sketchjax.data import sbir_splits
from sketchjax.methods import crossx_dfl
from sketchjax.methods import feature_statistics
from sketchjax.methods import unit_vectors
from sketchjax.models import doodlenet
from sketchjax.models import encoders
from sketchjax.models import mobilenet_v2
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
  initial = encoders.initial_variables(lambda: encoders.init_encoder_variables(
      model, jax.random.key(config.seed), config.data.image_size,
      config.teacher.pretrained or None))

  def init(rng, batch):
    del rng, batch  # The initial variables are those of config.seed.
    return encoders.split_params(initial())

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


def average_variables(a: Any, b: Any) -> Any:
  """Leaf-wise (a + b) / 2 of two variable trees of one architecture (the same
  structure and shapes, else ValueError)."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    raise ValueError("cannot average the variables of two different architectures: "
                     f"{jax.tree.structure(a)} vs {jax.tree.structure(b)}")
  shapes = [(np.shape(x), np.shape(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
  different = [pair for pair in shapes if pair[0] != pair[1]]
  if different:
    raise ValueError(f"cannot average variables of different shapes: {different[:3]}")
  return jax.tree.map(lambda x, y: (jnp.asarray(x) + jnp.asarray(y)) / 2, a, b)


def averaged_teacher(photo: str | pathlib.Path, sketch: str | pathlib.Path
                     ) -> tuple[encoders.ImageClassifier, Any, int]:
  """The "averaging weights" baseline's network (spec 2.8; the paper gives no
  details, this reading is ours): the photo and the sketch teacher (workdirs
  of one architecture and input side) as one classifier whose variables are
  the element-wise mean of theirs (every parameter, BatchNorm statistics where
  there are any). Returns (classifier, averaged variables, input side)."""
  (model, photo_vars, photo_cfg), (_, sketch_vars, sketch_cfg) = (load_teacher(photo),
                                                                  load_teacher(sketch))
  describe = lambda c: (c.teacher.backbone, bool(c.teacher.pretrained), c.teacher.num_classes,
                        c.data.image_size)
  if describe(photo_cfg) != describe(sketch_cfg):
    raise ValueError("the averaging-weights baseline needs teachers of one architecture and "
                     "input side; (backbone, folded BatchNorm, classes, side): "
                     f"photo {describe(photo_cfg)}, sketch {describe(sketch_cfg)}")
  return model, average_variables(photo_vars, sketch_vars), photo_cfg.data.image_size


def feature_embedding(model: encoders.ImageClassifier, size: int
                      ) -> Callable[[Any, jax.Array], jax.Array]:
  """(variables, images float[B, S, S, 3] in [-1, 1]) -> the classifier's
  pooled backbone features, L2-normalised, float[B, F]; images resized to
  `size` (the classifier's input side); its class layer is not used."""

  def embed(variables: Any, images: jax.Array) -> jax.Array:
    _, aux = model.apply(variables, crossx_dfl.resize(images, size), train=False)
    features = aux["features"]
    return unit_vectors.unit(features)

  return embed


def _frozen(model: encoders.ImageClassifier, name: str, size: int) -> crossx_dfl.Frozen:
  def apply(constants: Any, images: jax.Array):
    logits, aux = model.apply(constants[name], crossx_dfl.resize(images, size), train=False)
    return logits, aux["features"]
  return apply


def _proxies(name: str):
  return lambda constants: (constants[name]["params"]["classifier"]["kernel"],
                            constants[name]["params"]["classifier"]["bias"])


class Teacher(NamedTuple):
  """One loaded classifier: `frozen` over constants[name], its classes, its
  proxies (None where no student feature matches its classifier's input)."""

  frozen: crossx_dfl.Frozen
  classes: tuple[str, ...]
  variables: Any
  proxies: Callable[[Any], tuple[jax.Array, jax.Array]] | None


def imagenet_teacher(path: str, classes: Sequence[str], name: str, size: int) -> Teacher:
  """ImageNet MobileNetV2 (TFLite) on the retrieval classes it has labels for."""
  model, variables, labels = mobilenet_v2.load_mobilenet_v2(path)
  known = tuple(c for c in classes if c in imagenet_classes.SKETCHY_TO_IMAGENET)
  if not known:
    raise ValueError(f"{path}: ImageNet MobileNetV2 has labels for none of {list(classes)}")
  members = np.zeros((len(labels), len(known)), bool)  # [1001, C]: label j shows class c
  for c, cls in enumerate(known):
    members[list(imagenet_classes.SKETCHY_TO_IMAGENET[cls]), c] = True
  members = jnp.asarray(members)
  share = members / members.sum(0)  # [1001, C], columns average their labels

  def apply(constants: Any, images: jax.Array):
    logits, aux = model.apply(constants[name], crossx_dfl.resize(images, size))
    return jax.nn.logsumexp(logits[:, :, None], axis=1, where=members[None]), aux["pooled"]

  def proxies(constants: Any):
    classifier = constants[name]["params"]["classifier"]
    return classifier["kernel"] @ share, classifier["bias"] @ share

  return Teacher(apply, known, variables, proxies)


def doodlenet_teacher(folder: str, classes: Sequence[str], name: str) -> Teacher:
  """doodleNet on the retrieval classes with a QuickDraw category; images in
  [-1, 1] (dark ink on white) become its 28x28 white-on-black bitmaps."""
  model, variables, names = doodlenet.load_doodlenet(folder)
  to_sketchy = {q: s for q, s in sbir_splits.QUICKDRAW_TO_SKETCHY.items() if q in names}
  index = {s: names.index(q) for q, s in to_sketchy.items()}
  known = tuple(c for c in classes if c in index)
  if not known:
    raise ValueError(f"{folder}: doodleNet has QuickDraw classes for none of {list(classes)}")
  outputs = jnp.asarray([index[c] for c in known])

  def apply(constants: Any, images: jax.Array):
    ink = (1.0 - jnp.mean(images, axis=-1, keepdims=True)) / 2
    logits, aux = model.apply(constants[name], crossx_dfl.resize(ink, model.image_size))
    return logits[:, outputs], aux["features"]

  return Teacher(apply, known, variables, None)


def load_one(path: str, name: str, classes: Sequence[str], imagenet_size: int) -> Teacher:
  """The teacher at `path` (a teacher workdir, a .tflite file or a doodleNet folder)."""
  where = pathlib.Path(path)
  if where.suffix == ".tflite":
    return imagenet_teacher(path, classes, name, imagenet_size)
  if (where / "model.json").exists():
    return doodlenet_teacher(path, classes, name)
  model, variables, trained = load_teacher(path)
  return Teacher(_frozen(model, name, trained.data.image_size), tuple(trained.teacher.classes),
                 variables, _proxies(name))


def load_teachers(config: ml_collections.ConfigDict, classes: Sequence[str]
                  ) -> tuple[crossx_dfl.Teachers, dict]:
  """Teachers of `config.teachers` and their constants; `classes` are the
  retrieval classes (each must be known to at least one teacher).
  `teachers.modality` "" leaves L_modal out."""
  loaded = {}
  for name in ("photo", "sketch", "modality"):
    path = config.teachers[name]
    if not path:
      if name != "modality":
        raise ValueError(f"config.teachers.{name} is empty: give the workdir of a trained "
                         f"{name} (or unified) teacher, an ImageNet .tflite or a doodleNet folder")
      continue
    loaded[name] = load_one(path, name, classes, config.teachers.imagenet_size)
  photo, sketch = loaded["photo"], loaded["sketch"]
  unknown = sorted(set(classes) - set(photo.classes) - set(sketch.classes))
  if unknown:
    raise ValueError(f"neither teacher knows the retrieval classes {unknown} (photo teacher: "
                     f"{list(photo.classes)}; sketch teacher: {list(sketch.classes)})")
  shared = [c for c in photo.classes if c in sketch.classes]
  if not shared:
    raise ValueError("the photo and the sketch teacher share no class: nothing to align")
  teachers = crossx_dfl.Teachers(
      photo=photo.frozen, sketch=sketch.frozen,
      modality=loaded["modality"].frozen if "modality" in loaded else None,
      photo_proxies=photo.proxies, sketch_proxies=sketch.proxies,
      shared_photo=None if photo.classes == sketch.classes else
      jnp.asarray([photo.classes.index(c) for c in shared]),
      shared_sketch=None if photo.classes == sketch.classes else
      jnp.asarray([sketch.classes.index(c) for c in shared]))
  return teachers, {name: t.variables for name, t in loaded.items()}


def with_statistics(teachers: crossx_dfl.Teachers, constants: dict,
                    training_images: dict[str, np.ndarray]
                    ) -> tuple[crossx_dfl.Teachers, dict]:
  """`teachers` with photo_statistics / sketch_statistics, and `constants` with
  the reference statistics under "statistics" (those of the BN-free teachers,
  recorded here on `training_images` {"photo", "sketch": float32 [N, S, S, 3]
  in [-1, 1]}, each modality's on its own teacher; BN teachers use their
  running statistics and need none)."""
  reference = {}
  for modality, frozen in (("photo", teachers.photo), ("sketch", teachers.sketch)):
    _, batch, running = jax.jit(lambda c, x, f=frozen: feature_statistics.record(f, c, x))(
        constants, jnp.asarray(training_images[modality]))
    if running is None:
      reference[modality] = jax.device_get(batch)

  def loss_of(modality: str, frozen: crossx_dfl.Frozen):
    return lambda c, images: feature_statistics.feature_statistics_loss(
        frozen, c, images, reference=c["statistics"].get(modality))

  teachers = dataclasses.replace(teachers, photo_statistics=loss_of("photo", teachers.photo),
                                 sketch_statistics=loss_of("sketch", teachers.sketch))
  return teachers, {**constants, "statistics": reference}
