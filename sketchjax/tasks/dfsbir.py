"""Task `dfsbir`: data-free SBIR with CrossX-DFL (sketchjax/methods/crossx_dfl.py).

Modes (`config.mode`):
  teacher: trains one frozen network (`teacher.kind`: photo, sketch, unified
    classifier or the modality network) on the split's training side, in its
    own workdir; its accuracy on the test side at every eval.
  train: the estimators and the student encoders from the teachers of
    `config.teachers` alone (no real image is read but the test set, for the
    evaluation; the meta-data baseline records the teachers' layer statistics
    on their training images, the alternative-data baseline reads images of
    other classes); retrieval metrics of the real test set at every eval; at the
    end `map_by_step.png`, `retrieval.png` and, with the DCGAN estimators,
    `reconstructions.png` (estimator pairs per class from shared noise).
  evaluate_teachers: the "classifier only" baseline: test sketches and photos
    embedded by their teacher's class probabilities.
  evaluate_averaged: the "averaging weights" baseline (our reading): one
    network, the photo and the sketch teacher's variables averaged, its
    normalised pooled features the embedding of sketches and photos alike.
Results of evaluate_teachers / evaluate_averaged go to
`<workdir>/eval_teachers_<split>.json` / `eval_averaged_<split>.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Sequence
from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import optax

from sketchjax.data import image_items
from sketchjax.data import image_pipeline
from sketchjax.data import pipeline
from sketchjax.data import sbir_splits
from sketchjax.data.formats import image_folders
from sketchjax.methods import crossx_dfl
from sketchjax.methods import dfsbir_losses
from sketchjax.models import dcgan
from sketchjax.models import encoders
from sketchjax.models import torchvision_resnet
from sketchjax.tasks import dfsbir_figures
from sketchjax.tasks import dfsbir_teachers
from sketchjax.tasks import sbir
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer


def _write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  if jax.process_index() == 0 and not trainer.has_checkpoint(str(workdir)):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / dfsbir_teachers.CONFIG_FILE).write_text(config.to_json_best_effort(indent=1))


def train_teacher(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Trains `config.teacher.kind` on the split's training images."""
  kind = config.teacher.kind
  if kind not in dfsbir_teachers.KINDS:
    raise ValueError(f"unknown teacher.kind {kind!r}; expected one of {dfsbir_teachers.KINDS}")
  split = sbir.load_split(config)
  config = ml_collections.ConfigDict(config.to_dict())
  classes = ("photo", "sketch") if kind == "modality" else split.train.classes
  config.teacher.classes = list(classes)
  config.teacher.num_classes = 1 if kind == "modality" else len(classes)
  _write_config(workdir, config)
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  model = dfsbir_teachers.build_classifier(config.teacher, config.teacher.num_classes)
  preprocess = sbir.preprocess_of(config)
  train_iter = image_pipeline.pair_train_iterator(
      *sbir.train_sources(config, split, workdir), global_batch_size=config.train.batch_size,
      seed=config.seed, preprocess=preprocess, pairing="class", cache=config.data.cache_images)
  test = {"photo": image_pipeline.ItemSource(split.test.photos, split.test.classes),
          "sketch": image_pipeline.ItemSource(split.test.sketches, split.test.classes)}

  def custom_eval(variables) -> dict[str, float]:
    params, state = variables
    variables = {"params": params, **state}
    if kind == "modality":
      return {f"{m}_accuracy": dfsbir_teachers.accuracy(model, variables, test[m], kind, config,
                                                        preprocess, mesh, target=i)
              for i, m in enumerate(("photo", "sketch"))}
    shown = ("photo", "sketch") if kind == "unified" else (kind,)
    return {f"{m}_accuracy": dfsbir_teachers.accuracy(model, variables, test[m], kind, config,
                                                      preprocess, mesh) for m in shown}

  return trainer.train_and_evaluate(config, str(workdir),
                                    dfsbir_teachers.teacher_objective(model, config),
                                    train_iter, None, mesh=mesh, custom_eval=custom_eval)


class NoiseBatches:
  """The batches of CrossX-DFL's trainer steps: no data, only the batch size
  ({"pair": int32 [B / processes]}); the noise is drawn inside the step from
  the state's key, so there is no position to checkpoint."""

  position_free = True

  def __init__(self, global_batch_size: int):
    self._batch = {"pair": np.zeros(pipeline.process_batch_size(global_batch_size),
                                    np.int32)}

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return self._batch


def build_students(config: ml_collections.ConfigDict) -> encoders.SketchPhotoEncoder:
  s = config.students
  return encoders.SketchPhotoEncoder(backbone=s.backbone, embed_dim=s.embed_dim, shared=False,
                                     mobilenet_batch_norm=not s.pretrained)


def _to_encoder_convention(backbone: str):
  """Maps a tensor normalised for the backbone's first layer back to the
  encoders' [-1, 1] input (ResNets apply the ImageNet normalisation inside)."""
  if backbone.startswith("resnet"):
    mean = jnp.asarray(torchvision_resnet.IMAGENET_MEAN)
    std = jnp.asarray(torchvision_resnet.IMAGENET_STD)
    return lambda y: 2 * (y * std + mean) - 1
  return lambda y: y


def students_of(model: encoders.SketchPhotoEncoder, config: ml_collections.ConfigDict
                ) -> crossx_dfl.Students:
  def encode(variables, modality, images, train):
    method = model.encode_photo if modality == "photo" else model.encode_sketch
    if not train:
      embeddings, aux = model.apply(variables, images, method=method)
      return (embeddings, aux["features"]), variables
    (embeddings, aux), updates = model.apply(variables, images, train=True, method=method,
                                             mutable=["batch_stats"])
    return (embeddings, aux["features"]), {**variables, **updates}

  transform = (functools.partial(crossx_dfl.official_normalization,
                                 to_encoder=_to_encoder_convention(config.students.backbone))
               if config.students.official_normalization else (lambda x: x))
  return crossx_dfl.Students(encode, config.data.image_size, transform)


def _estimator(config: ml_collections.ConfigDict, teachers: crossx_dfl.Teachers | None = None,
               constants: Any = None) -> dcgan.Estimator:
  """The DCGAN estimator of `config.estimator`; with `config.dfl.class_conditional`,
  class-conditional over the photo teacher's classes (`teachers`, `constants` needed)."""
  e = config.estimator
  num_classes = (crossx_dfl.photo_classes(teachers, constants, e.output_size)
                 if config.dfl.class_conditional else 0)
  return dcgan.Estimator(latent_dim=e.latent_dim, width=e.width, output_size=e.output_size,
                         num_classes=num_classes)


def generate_fn(estimator: dcgan.Estimator, train: bool = True):
  """(params, state, noise [, labels]) -> ((photos, sketches), new state) of the
  two estimators (labels: int [B], class-conditional estimators only)."""

  def generate(params, state, noise, labels=None):
    out, new_state = {}, {}
    inputs = (noise,) if labels is None else (noise, labels)
    for modality in ("photo", "sketch"):
      variables = {"params": params[modality], **state[modality]}
      if train:
        out[modality], new_state[modality] = estimator.apply(
            variables, *inputs, train=True, mutable=["batch_stats"])
      else:
        out[modality], new_state[modality] = estimator.apply(variables, *inputs), state[modality]
    return (out["photo"], out["sketch"]), new_state

  return generate


def dfl_objective(config: ml_collections.ConfigDict, teachers: crossx_dfl.Teachers,
                  constants: dict, students: encoders.SketchPhotoEncoder,
                  mesh: jax.sharding.Mesh) -> trainer.Objective:
  """CrossX-DFL as a trainer objective: one trainer step is one period."""
  dfl = config.dfl
  if dfl.batch_size % mesh.shape[mesh_lib.DATA_AXIS]:
    raise ValueError(f"dfl.batch_size={dfl.batch_size} must divide over the "
                     f"{mesh.shape[mesh_lib.DATA_AXIS]} devices of the data axis")
  estimator = _estimator(config, teachers, constants)
  optimizers = {
      "estimators": optax.sgd(dfl.estimator_learning_rate, momentum=0.9),
      "students": optax.sgd(student_schedule(config), momentum=0.9),
  }
  heads = config.students.projection_dim > 0  # ours: projection heads for InfoNCE only
  if heads:  # trained with the students, the same optimiser and schedule
    optimizers["heads"] = optax.sgd(student_schedule(config), momentum=0.9)
  initial = encoders.initial_variables(lambda: encoders.init_encoder_variables(
      students, jax.random.key(config.seed), config.data.image_size,
      config.students.pretrained or None))

  def init(rng, batch):
    del batch
    student_vars = initial()
    student_params, student_state = encoders.split_params(student_vars)
    photo_rng, sketch_rng, queue_rng = jax.random.split(rng, 3)
    inputs = (jnp.zeros((1, config.estimator.latent_dim)),
              *((jnp.zeros(1, jnp.int32),) if estimator.num_classes else ()))
    est = {"photo": estimator.init(photo_rng, *inputs),
           "sketch": estimator.init(sketch_rng, *inputs)}
    embed_dim = jax.eval_shape(
        lambda v: students.apply(v, jnp.zeros((1, config.data.image_size,
                                               config.data.image_size, 3)),
                                 method=students.encode_photo)[0], student_vars).shape[-1]
    params = {"estimators": {m: v["params"] for m, v in est.items()},
              "students": student_params}
    key_dim = embed_dim
    if heads:  # ours; its own key, so the rest of the init is today's
      params["heads"] = crossx_dfl.projection_heads(
          jax.random.fold_in(rng, 1), embed_dim, config.students.projection_dim,
          config.students.projection_hidden)
      key_dim = config.students.projection_dim
    labelled = dfl.mask_same_class_negatives or dfl.class_positives
    state = {"estimators": {m: {"batch_stats": v["batch_stats"]} for m, v in est.items()},
             "students": student_state,
             "queues": dfsbir_losses.Queues.random(queue_rng, dfl.queue_size, key_dim,
                                                   labelled=labelled)}
    if dfl.key_momentum:  # ours: MoCo's key encoders start as the students
      state["key_encoders"] = jax.tree.map(jnp.copy, {"params": student_params, **student_state})
    return params, state

  weights = crossx_dfl.Weights(one_hot=dfl.one_hot, info_entropy=dfl.info_entropy,
                               activation=dfl.activation, modality=dfl.modality,
                               alignment=dfl.alignment, adversarial=dfl.adversarial,
                               statistics=dfl.statistics)
  schedule = crossx_dfl.Schedule(
      estimator_steps=dfl.estimator_steps, batch_size=dfl.batch_size,
      latent_dim=config.estimator.latent_dim, metric=dfl.metric, temperature=dfl.temperature,
      official_queue=dfl.official_queue, estimator=dfl.estimator,
      inversion_size=dfl.inversion_size, inversion_learning_rate=dfl.inversion_learning_rate,
      refine_steps=dfl.refine_steps, refine_step_size=dfl.refine_step_size,
      gaussian_size=config.estimator.output_size, gaussian_std=dfl.gaussian_std,
      conditional_classes=estimator.num_classes,
      mask_same_class_negatives=dfl.mask_same_class_negatives, key_momentum=dfl.key_momentum,
      in_batch_negatives=dfl.in_batch_negatives, class_positives=dfl.class_positives,
      student_grad_clip=dfl.student_grad_clip)
  noise_sharding = NamedSharding(mesh, PartitionSpec(mesh_lib.DATA_AXIS))

  def update(params, model_state, opt_state, batch, rng, constants):
    # Only the batch's size, but for the alternative-data baseline (real images).
    real = (batch["photo"], batch["sketch"]) if dfl.estimator == "real" else None
    return crossx_dfl.period_update(
        params, model_state, opt_state, rng, constants, generate=generate_fn(estimator),
        teachers=teachers, students=students_of(students, config), weights=weights,
        schedule=schedule, optimizers=optimizers,
        shard=lambda x: jax.lax.with_sharding_constraint(x, noise_sharding), real=real)

  return trainer.Objective(init=init, loss=None, evaluate=None, stateful=True, update=update,
                           optimizer=crossx_dfl.two_group_optimizer(optimizers),
                           constants=constants)


def student_schedule(config: ml_collections.ConfigDict):
  """The students' learning rate by period: the official cosine decay of
  `dfl.student_learning_rate` over `train.num_steps`; ours, with
  `dfl.student_warmup_periods` = W > 0, times min(1, (t + 1) / W) (a linear
  warm-up over the first W periods, the cosine unchanged after)."""
  dfl = config.dfl
  cosine = optax.cosine_decay_schedule(dfl.student_learning_rate, config.train.num_steps)
  if not dfl.student_warmup_periods:
    return cosine
  warmup = dfl.student_warmup_periods
  return lambda step: cosine(step) * jnp.minimum(1.0, (step + 1) / warmup)


def alternative_classes(config: ml_collections.ConfigDict,
                        retrieval_classes: Sequence[str]) -> list[str]:
  """`dfl.alternative_classes`, or the first `dfl.alternative_count` Sketchy
  classes (sorted) with QuickDraw drawings that are not retrieval classes."""
  if config.dfl.alternative_classes:
    chosen = config.dfl.alternative_classes.split(",")
  else:
    sketchy = {p.name for p in (pathlib.Path(config.data.dir) / "sketchy" / "photo").iterdir()}
    chosen = sorted(set(sbir_splits.QUICKDRAW_TO_SKETCHY.values()) & sketchy)
    chosen = [c for c in chosen if c not in retrieval_classes][:config.dfl.alternative_count]
  overlap = sorted(set(chosen) & set(retrieval_classes))
  if overlap:
    raise ValueError(f"dfl.alternative_classes {overlap} are retrieval classes: the "
                     "alternative data must come from other classes")
  return chosen


def alternative_sources(config: ml_collections.ConfigDict, retrieval_classes: Sequence[str]
                        ) -> tuple[image_pipeline.ItemSource, image_pipeline.ItemSource]:
  """The alternative-data baseline's real images (ours: the paper says "other
  data"): Sketchy photos and QuickDraw drawings (simplified, rendered) of
  classes that are not retrieval classes, `dfl.alternative_per_class` of each
  a class; their own labels are never used."""
  classes = alternative_classes(config, retrieval_classes)
  data = pathlib.Path(config.data.dir)
  photos = [item for c in classes
            for item in sorted((data / "sketchy" / "photo" / c).iterdir())[
                :config.dfl.alternative_per_class]]
  photos = [image_items.ImageItem(str(p), p.parent.name, "photo") for p in photos]
  to_quickdraw = {s: q for q, s in sbir_splits.QUICKDRAW_TO_SKETCHY.items() if s in classes}
  drawings = image_folders.read_quickdraw_drawings(
      data / "quickdraw" / "simplified", sorted(to_quickdraw.values()),
      max_per_class=config.dfl.alternative_per_class)
  drawings = [dataclasses.replace(d, label=sbir_splits.QUICKDRAW_TO_SKETCHY[d.label])
              for d in drawings]
  missing = sorted(set(classes) - {d.label for d in drawings})
  if missing:
    raise ValueError(f"no QuickDraw drawings of the alternative classes {missing} under "
                     f"{data / 'quickdraw' / 'simplified'}")
  return (image_pipeline.ItemSource(photos, classes),
          image_pipeline.ItemSource(drawings, classes))


def real_sources(config: ml_collections.ConfigDict, split: sbir_splits.SbirSplit
                 ) -> tuple[image_pipeline.ItemSource, image_pipeline.ItemSource]:
  """The real images of `estimator="real"` by `dfl.real_images`: "other_classes" the
  alternative-data baseline's (`alternative_sources`); "training_split" (ours, a
  diagnosis, not data-free) the split's training photos and sketches of the retrieval
  classes, the teachers' own images, unpaired (the pipeline pairs at random and the
  teachers' labels re-pair them): whether the students' objective learns cross-modal
  classes from real images of those classes at all."""
  if config.dfl.real_images == "other_classes":
    return alternative_sources(config, split.test.classes)
  if config.dfl.real_images == "training_split":
    return (image_pipeline.ItemSource(split.train.photos, split.train.classes),
            image_pipeline.ItemSource(split.train.sketches, split.train.classes))
  raise ValueError(f"dfl.real_images={config.dfl.real_images!r}: expected 'other_classes' "
                   "or 'training_split'")


def _training_images(split: sbir_splits.SbirSplit, config: ml_collections.ConfigDict
                     ) -> dict[str, np.ndarray]:
  """{"photo", "sketch": float32 [N, S, S, 3]}: the split's training images (the
  teachers' own), for the meta-data baseline's recorded statistics."""
  preprocess = sbir.preprocess_of(config)
  out = {}
  for modality, items in (("photo", split.train.photos), ("sketch", split.train.sketches)):
    batches = image_pipeline.image_eval_batches(
        image_pipeline.ItemSource(items, split.train.classes),
        global_batch_size=config.train.eval_batch_size, preprocess=preprocess)
    out[modality] = np.concatenate([b["image"][b["weight"] > 0] for b in batches])
  return out


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """CrossX-DFL (or one of the paper's baselines) from the teachers; retrieval
  on the real test set."""
  split = sbir.load_split(config)
  _write_config(workdir, config)
  teachers, constants = dfsbir_teachers.load_teachers(config, split.train.classes)
  if config.dfl.statistics:
    teachers, constants = dfsbir_teachers.with_statistics(teachers, constants,
                                                          _training_images(split, config))
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  students = build_students(config)
  objective = dfl_objective(config, teachers, constants, students, mesh)

  def student_variables(variables) -> dict:
    params, state = variables
    return {"params": params["students"], **state["students"]}

  def custom_eval(variables) -> dict[str, float]:
    return sbir.evaluate_split(students, student_variables(variables), split, config, mesh)

  if config.dfl.estimator == "real":
    batches = image_pipeline.pair_train_iterator(
        *real_sources(config, split),
        global_batch_size=config.dfl.batch_size, seed=config.seed,
        preprocess=sbir.preprocess_of(config), pairing="random", cache=config.data.cache_images)
  else:
    batches = NoiseBatches(config.dfl.batch_size)
  metrics = trainer.train_and_evaluate(config, str(workdir), objective, batches, None, mesh=mesh,
                                       custom_eval=custom_eval)
  params, state = trainer.restore_params(str(workdir), objective,
                                         next(NoiseBatches(config.dfl.batch_size)), config, mesh)
  if jax.process_index() == 0:
    _save_figures(config, workdir, params, state, teachers, constants, students, split, mesh)
  return metrics


def _save_figures(config, workdir, params, state, teachers, constants, students, split, mesh):
  dfsbir_figures.save_map_by_step(workdir / "map_by_step.png", workdir / "metrics.jsonl")
  sbir.save_split_figure(students, {"params": params["students"], **state["students"]}, split,
                         config, mesh, workdir / "retrieval.png")
  if config.dfl.estimator != "dcgan":  # The inversion's pixels are not kept: no DCGAN to draw.
    return
  estimator = _estimator(config, teachers, constants)
  generate = generate_fn(estimator, train=False)
  count = max(64, config.dfl.batch_size)
  noise = jax.random.normal(jax.random.key(config.seed + 1), (count, config.estimator.latent_dim))
  labels = (jnp.arange(count) % estimator.num_classes,) if estimator.num_classes else ()
  (photos, sketches), _ = jax.jit(generate)(params["estimators"], state["estimators"], noise,
                                            *labels)
  photo_labels = jnp.argmax(teachers.photo(constants, photos)[0], -1)
  sketch_labels = jnp.argmax(teachers.sketch(constants, sketches)[0], -1)
  dfsbir_figures.save_reconstructions(workdir / "reconstructions.png", *jax.device_get(
      (photos, sketches, photo_labels, sketch_labels)), split.train.classes)


def evaluate_teachers(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """The "classifier only" baseline: each test image embedded by its
  modality's teacher's class probabilities (cosine retrieval)."""
  split = sbir.load_split(config)
  teachers, constants = dfsbir_teachers.load_teachers(config, split.test.classes)
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  probabilities = lambda teacher: (lambda c, images: jax.nn.softmax(teacher(c, images)[0], -1))
  query = sbir.embed_images(probabilities(teachers.sketch), constants, split.test.sketches,
                            config, mesh)
  gallery = sbir.embed_images(probabilities(teachers.photo), constants, split.test.photos,
                              config, mesh)
  return _baseline_result(config, workdir, "classifier only", "eval_teachers",
                          sbir.split_metrics(query, gallery, split, config, mesh))


def _baseline_result(config: ml_collections.ConfigDict, workdir: pathlib.Path, baseline: str,
                     stem: str, metrics: dict) -> dict:
  """The metrics of an evaluation-only baseline, printed and written to
  `<workdir>/<stem>_<split>.json`."""
  result = {"split": config.data.split, "baseline": baseline,
            "teachers": {k: config.teachers[k] for k in ("photo", "sketch")}, **metrics}
  print(json.dumps(result))
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{stem}_{config.data.split}.json").write_text(json.dumps(result, indent=1))
  return result


def evaluate_averaged(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """The "averaging weights" baseline (spec 2.8; the paper gives no details,
  the reading is ours): one encoder for both modalities whose weights are the
  element-wise mean of the photo and the sketch teacher's
  (`dfsbir_teachers.averaged_teacher`), its pooled backbone features,
  L2-normalised, the embedding of test sketches and photos; no training."""
  split = sbir.load_split(config)
  model, variables, size = dfsbir_teachers.averaged_teacher(config.teachers.photo,
                                                            config.teachers.sketch)
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  embed = dfsbir_teachers.feature_embedding(model, size)
  query = sbir.embed_images(embed, variables, split.test.sketches, config, mesh)
  gallery = sbir.embed_images(embed, variables, split.test.photos, config, mesh)
  return _baseline_result(config, workdir, "averaging weights", "eval_averaged",
                          sbir.split_metrics(query, gallery, split, config, mesh))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Entry point of the task: dispatches on `config.mode`."""
  modes = {"teacher": train_teacher, "train": train, "evaluate_teachers": evaluate_teachers,
           "evaluate_averaged": evaluate_averaged}
  if config.mode not in modes:
    raise ValueError(f"unknown mode {config.mode!r}; expected one of {list(modes)}")
  logging.info("dfsbir %s", config.mode)
  return modes[config.mode](config, pathlib.Path(workdir))
