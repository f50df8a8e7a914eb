"""CrossX-DFL (spec 2): estimators reconstruct class-aligned photo/sketch pairs
from two frozen classifiers, and student encoders learn retrieval on them.

One call of `period_update` is one schedule period of the paper (an "epoch"
of the official code): `estimator_steps` estimator updates, each on fresh
noise fed to both estimators, then one student update on the pairs of the
last estimator step. Everything is a pure function of explicit arguments
(the frozen networks come in as `Frozen` callables over a `constants` pytree),
for `jax.jit` over a global batch.

Which parts are whose:
  paper and both codes  the estimator loss 3 L_oh + 5 L_ie + 0.1 L_a + L_modal +
                        L_align, SGD(0.9) for both players, the 500:1 schedule;
  main.py               + L_adv (`use_adv`), ProxyAnchor students (`metric`);
  vanilla.py            InfoNCE students with two queues;
  the paper's union     independent teachers + L_adv + InfoNCE (our default);
  ours                  queues that update for any batch size
                        (`official_queue=False`), per-image input handling of
                        the students (`official_normalization=False`: the code
                        normalises by statistics of thirds of the flat batch
                        buffer, spec 2.4), estimator images resized to each
                        network's input, students run with their running
                        BatchNorm statistics inside the estimator step (the
                        code leaves them in whatever mode they were), no
                        gradients for frozen networks' weights;
                        `invert_pairs` (model inversion: pixels optimised
                        directly, vmapped over classes) as another estimator,
                        and `refine_pairs` (adversarial refinement of the pairs
                        on the inputs) before the student step;
                        `Schedule.conditional_classes`: class-conditional DCGAN
                        estimators, each noise vector aimed at an assigned
                        class (a fix for the class collapse, not the paper's);
                        `Schedule.mask_same_class_negatives`: InfoNCE without
                        the queue keys of the pair's own teacher class;
                        `Schedule.key_momentum` (momentum key encoders, MoCo's)
                        and `Schedule.in_batch_negatives` (CLIP / SimCLR's),
                        against the students' collapse; `collapse_signals`;
                        `Schedule.class_positives` (supervised contrastive),
                        projection heads for the contrastive loss only
                        (`params["heads"]`, SimCLR's; `projection_heads`) and
                        `Schedule.student_grad_clip` (global-norm clipping of
                        the students' step), against the same collapse.

The paper's baselines (spec 2.8), each a switch here (the paper names them in
its table and says little more; the readings are ours, see each switch):
  Gaussian prior      `Schedule.estimator="gaussian"`: no estimator, the students
                      learn on Gaussian images, paired by their teachers' labels;
  uni-modal           `Schedule.metric="distillation"` with L_align and L_modal off:
    distillation      each student distilled from its own teacher (KL through the
                      teacher's classifier), no pairing anywhere;
  meta-data           `Weights.statistics` with the inversion estimator: inputs
                      reconstructed from the teachers' layer statistics
                      (DeepInversion; `feature_statistics.py`);
  alternative data    `Schedule.estimator="real"`: real images of other classes,
                      paired by their teachers' labels.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from sketchjax.methods import dfsbir_losses as losses

# (constants, images float[B, S, S, 3] in [-1, 1]) -> (logits [B, C], features [B, F])
Frozen = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the DF-SBIR code's "ImageNet" normalisation
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@dataclasses.dataclass(frozen=True)
class Weights:
  """Estimator loss weights (the code's --oh 3, --ie 5, --a 0.1; 1 for the rest);
  0 switches a term off."""

  one_hot: float = 3.0
  info_entropy: float = 5.0
  activation: float = 0.1
  modality: float = 1.0
  alignment: float = 1.0
  adversarial: float = 1.0
  statistics: float = 0.0  # the meta-data baseline's feature-statistics loss (0: off)


@dataclasses.dataclass(frozen=True)
class Teachers:
  """The frozen networks, as functions of the `constants` pytree.

  photo, sketch: classifiers (the same function for a unified teacher).
  modality: images -> (logit [B, 1], features); None without L_modal.
  photo_proxies, sketch_proxies: constants -> (kernel [F, C], bias [C]) of each
    teacher's classifier (L_adv, ProxyAnchor); None where the students'
    features do not match it (no L_adv on that side).
  shared_photo, shared_sketch: int indices [K] of the classes the two teachers
    share, in each one's outputs (L_align compares those; all classes when the
    teachers agree).
  photo_statistics, sketch_statistics: (constants, images) -> the teacher's
    feature-statistics loss (`feature_statistics.feature_statistics_loss`), for
    `Weights.statistics`; None without it.
  """

  photo: Frozen
  sketch: Frozen
  modality: Frozen | None
  photo_proxies: Callable[[Any], tuple[jax.Array, jax.Array]] | None
  sketch_proxies: Callable[[Any], tuple[jax.Array, jax.Array]] | None
  shared_photo: jax.Array | None = None
  shared_sketch: jax.Array | None = None
  photo_statistics: Callable[[Any, jax.Array], jax.Array] | None = None
  sketch_statistics: Callable[[Any, jax.Array], jax.Array] | None = None

  def sketch_of_photo(self, num_classes: int) -> jax.Array:
    """int [num_classes]: the sketch teacher's index of each photo-teacher class,
    -1 where the sketch teacher does not know it."""
    if self.shared_photo is None:
      return jnp.arange(num_classes)
    return jnp.full(num_classes, -1).at[self.shared_photo].set(self.shared_sketch)


@dataclasses.dataclass(frozen=True)
class Students:
  """The student encoders as functions of their variables.

  encode: (variables, modality "photo" | "sketch", images at the student size in
    the encoders' [-1, 1] convention, train) -> ((unit embeddings [B, D],
    un-normalised features [B, F]), updated variables).
  image_size: their input side; estimator images are resized to it.
  input_transform: images -> images before `encode` during training (the
    official normalisation bug, or identity).
  """

  encode: Callable[..., tuple[tuple[jax.Array, jax.Array], Any]]
  image_size: int
  input_transform: Callable[[jax.Array], jax.Array] = lambda x: x


def resize(images: jax.Array, size: int) -> jax.Array:
  """[B, S, S, C] -> [B, size, size, C], bilinear (identity when S == size)."""
  if images.shape[1] == size:
    return images
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bilinear")


def official_normalization(images: jax.Array, to_encoder: Callable[[jax.Array], jax.Array]
                           ) -> jax.Array:
  """The DF-SBIR code's student inputs (spec 2.4): the NCHW batch buffer viewed
  as 3 rows (`x.view(3, -1)`), each row's mean/std applied to one channel, then
  the CIFAR normalisation on top. `to_encoder` maps the normalised tensor y
  (what the code's ResNet sees) into the encoder's [-1, 1] input convention."""
  nchw = jnp.transpose(images, (0, 3, 1, 2))
  thirds = nchw.reshape(3, -1)
  mean, std = jnp.mean(thirds, axis=1), jnp.std(thirds, axis=1, ddof=1)
  y = (nchw - mean[None, :, None, None]) / std[None, :, None, None]
  y = (y - jnp.asarray(CIFAR_MEAN)[None, :, None, None]) / jnp.asarray(CIFAR_STD)[None, :, None,
                                                                                  None]
  return to_encoder(jnp.transpose(y, (0, 2, 3, 1)))


def sketch_targets(teachers: Teachers, targets: jax.Array, num_photo_classes: int,
                   sketch_logits: jax.Array) -> jax.Array:
  """int [B]: the sketch teacher's index of each target class (int [B], the
  photo teacher's of `num_photo_classes`), its own argmax of `sketch_logits`
  [B, C_s] where it does not know the class."""
  wanted = teachers.sketch_of_photo(num_photo_classes)[targets]
  return jnp.where(wanted >= 0, wanted, jnp.argmax(sketch_logits, -1))


def estimator_loss(estimator_params: Any, estimator_state: Any, *, generate: Callable,
                   noise: jax.Array, teachers: Teachers, students: Students,
                   student_variables: Any, constants: Any, weights: Weights,
                   targets: jax.Array | None = None
                   ) -> tuple[jax.Array, tuple[dict, Any, tuple]]:
  """L_G of one estimator step.

  generate: (estimator params, estimator state, noise[, targets]) -> ((photos,
    sketches) [B, S, S, 3] in [-1, 1], new estimator state).
  targets: None (the paper: L_oh is each image's cross-entropy with its own
    argmax), or, for class-conditional estimators (ours), int [B] the photo
    teacher's class assigned to each noise vector: given to `generate`, and
    L_oh becomes the cross-entropy with it in both teachers (`sketch_targets`).
  Returns (L_G, (metrics, new estimator state, (photos, sketches, photo
  pseudo-labels, sketch pseudo-labels))); the pseudo-labels are the teachers'
  argmax either way. Only `estimator_params` are differentiated; the students
  run with their running statistics.
  """
  if targets is None:
    (photos, sketches), new_state = generate(estimator_params, estimator_state, noise)
  else:
    (photos, sketches), new_state = generate(estimator_params, estimator_state, noise, targets)
  photo_logits, photo_features = teachers.photo(constants, photos)
  sketch_logits, sketch_features = teachers.sketch(constants, sketches)
  if targets is None:
    one_hot = losses.one_hot_loss(photo_logits) + losses.one_hot_loss(sketch_logits)
  else:
    one_hot = (losses.class_target_loss(photo_logits, targets) + losses.class_target_loss(
        sketch_logits, sketch_targets(teachers, targets, photo_logits.shape[-1], sketch_logits)))
  terms = {
      "one_hot": one_hot,
      "info_entropy": (losses.info_entropy_loss(photo_logits) +
                       losses.info_entropy_loss(sketch_logits)),
      "activation": (losses.activation_loss(photo_features) +
                     losses.activation_loss(sketch_features)),
  }
  if weights.modality and teachers.modality is not None:
    terms["modality"] = losses.modality_loss(teachers.modality(constants, photos)[0][:, 0],
                                             teachers.modality(constants, sketches)[0][:, 0])
  if weights.statistics:
    if teachers.photo_statistics is None or teachers.sketch_statistics is None:
      raise ValueError("Weights.statistics needs the teachers' feature statistics "
                       "(Teachers.photo_statistics / sketch_statistics)")
    terms["statistics"] = (teachers.photo_statistics(constants, photos) +
                           teachers.sketch_statistics(constants, sketches))
  if weights.alignment:
    aligned = lambda logits, index: logits if index is None else logits[:, index]
    terms["alignment"] = losses.alignment_loss(aligned(photo_logits, teachers.shared_photo),
                                               aligned(sketch_logits, teachers.shared_sketch))
  photo_labels = jnp.argmax(photo_logits, -1)
  sketch_labels = jnp.argmax(sketch_logits, -1)
  if weights.adversarial and (teachers.photo_proxies or teachers.sketch_proxies):
    adversarial = 0.0
    for modality, images, labels, proxies in (
        ("photo", photos, photo_labels, teachers.photo_proxies),
        ("sketch", sketches, sketch_labels, teachers.sketch_proxies)):
      if proxies is None:
        continue
      (_, features), _ = students.encode(student_variables, modality,
                                         students.input_transform(
                                             resize(images, students.image_size)),
                                         train=False)
      adversarial += losses.adversarial_loss(features, *proxies(constants), labels)
    terms["adversarial"] = adversarial
  total = sum(getattr(weights, name) * value for name, value in terms.items())
  return total, (terms, new_state, (photos, sketches, photo_labels, sketch_labels))


def distillation_loss(features: jax.Array, teacher_logits: jax.Array, kernel: jax.Array,
                      bias: jax.Array) -> jax.Array:
  """The uni-modal baseline's student loss (DAFL's distillation, T = 1):
  mean_i KL(softmax(teacher_logits_i) || softmax(features_i @ kernel + bias)),
  the student's un-normalised features [B, F] read by the teacher's own
  classifier (kernel [F, C], bias [C]); teacher_logits [B, C] carry no gradient."""
  target = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits), -1)
  student = jax.nn.log_softmax(features @ kernel + bias, -1)
  return jnp.mean(jnp.sum(jnp.exp(target) * (target - student), -1))


def pair_by_labels(rng: jax.Array, photo_labels: jax.Array, sketch_labels: jax.Array,
                   sketch_of_photo: jax.Array) -> jax.Array:
  """For images that come unpaired (the Gaussian-prior and alternative-data
  baselines; ours): int [B], for each photo a sketch of the batch whose
  teacher label is the photo's (drawn uniformly among them, with replacement),
  or a sketch drawn uniformly where none is. photo_labels [B], sketch_labels
  [B'] (each in its teacher's classes), sketch_of_photo [C_p] (-1: unknown)."""
  wanted = sketch_of_photo[photo_labels]  # [B]
  same = (sketch_labels[None, :] == wanted[:, None]) & (wanted[:, None] >= 0)  # [B, B']
  score = same + jax.random.uniform(rng, same.shape, maxval=0.5)
  return jnp.argmax(score, axis=-1)


def _mean_where(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values` where `mask` (NaN where it is empty)."""
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.sum(mask)


def collapse_signals(photo: jax.Array, sketch: jax.Array, photo_labels: jax.Array,
                     sketch_labels: jax.Array, sketch_of_photo: jax.Array) -> dict:
  """Ours, training signals of an embedding collapse that need no test image:
  mean cosines between different rows (i != j) of the period's own batch.

  photo, sketch: [B, D] unit embeddings of the pairs; photo_labels,
  sketch_labels: int [B] the pairs' teacher labels, each in its teacher's
  classes; sketch_of_photo: int [C_p] (`Teachers.sketch_of_photo`, -1 unknown).
  Returns scalars "{photo,sketch,cross}_cosine" and their "_same_class" /
  "_other_class" parts: photo x photo and sketch x sketch by their own labels,
  cross = photo i x sketch j (the pairs themselves are `pair_cosine`) by the
  photo's class in the sketch teacher's classes. Near 1 everywhere: one
  embedding per modality; a class structure shows as same > other. NaN where a
  batch has no pair of that kind.
  """
  off = ~jnp.eye(photo.shape[0], dtype=bool)
  photo_in_sketch = sketch_of_photo[photo_labels]
  out = {}
  for name, a, b, la, lb in (("photo", photo, photo, photo_labels, photo_labels),
                             ("sketch", sketch, sketch, sketch_labels, sketch_labels),
                             ("cross", photo, sketch, photo_in_sketch, sketch_labels)):
    cosine = a @ b.T
    same = (la[:, None] == lb[None, :]) & (la[:, None] >= 0)
    out[f"{name}_cosine"] = _mean_where(cosine, off)
    out[f"{name}_cosine_same_class"] = _mean_where(cosine, off & same)
    out[f"{name}_cosine_other_class"] = _mean_where(cosine, off & ~same)
  return out


def projection_heads(rng: jax.Array, in_dim: int, dim: int, hidden: int = 0) -> dict:
  """Ours (SimCLR's projection head, here against the students' collapse): the
  parameters of one head per modality, {"photo", "sketch": {"dense_0": {"kernel",
  "bias"}, ...}}: one Dense in_dim -> dim (hidden = 0, linear), or Dense in_dim ->
  hidden, ReLU, Dense hidden -> dim (a 2-layer MLP); kernels LeCun-normal and
  biases 0, as flax's Dense."""
  widths = (in_dim, dim) if not hidden else (in_dim, hidden, dim)
  init = jax.nn.initializers.lecun_normal()
  heads = {}
  for modality, key in zip(("photo", "sketch"), jax.random.split(rng)):
    keys = jax.random.split(key, len(widths) - 1)
    heads[modality] = {f"dense_{i}": {"kernel": init(k, (a, b), jnp.float32),
                                      "bias": jnp.zeros(b, jnp.float32)}
                       for i, (k, a, b) in enumerate(zip(keys, widths[:-1], widths[1:]))}
  return heads


def apply_head(head: dict, embeddings: jax.Array) -> jax.Array:
  """One modality's head (`projection_heads`) on the students' unit embeddings
  [B, F] -> unit outputs [B, dim] (ReLU between layers, none after the last)."""
  x = embeddings
  for index in range(len(head)):
    if index:
      x = jax.nn.relu(x)
    x = x @ head[f"dense_{index}"]["kernel"] + head[f"dense_{index}"]["bias"]
  return losses.unit_rows(x)


def student_loss(student_params: Any, student_state: Any, *, students: Students,
                 pairs: tuple, teachers: Teachers, constants: Any, queues: losses.Queues,
                 metric: str, temperature: float, mask_same_class: bool = False,
                 keys: tuple[jax.Array, jax.Array] | None = None,
                 in_batch_negatives: bool = False, class_positives: bool = False,
                 head_params: dict | None = None
                 ) -> tuple[jax.Array, tuple[dict, Any, tuple]]:
  """L_metric of the student step on generated pairs (no gradient to the estimators):
  `metric` "info_nce" (vanilla.py), "proxy_anchor" (main.py) or "distillation"
  (the uni-modal baseline: `distillation_loss` per modality, no pairing).
  mask_same_class (ours; InfoNCE, labelled queues): the queue keys whose
  teacher label is the pair's (its teachers' argmax, `pairs`' labels, also
  with class-conditional estimators) are no negatives; the share of queue keys
  dropped is logged as "masked_negatives". Logged for every metric (ours):
  `collapse_signals` of the embeddings.
  keys (ours; InfoNCE): (photo keys, sketch keys) [B, D] of the pairs from the
  momentum key encoders (`key_embeddings`), the positives (and in-batch
  negatives) in place of the students' own embeddings; "key_cosine" logs the
  mean cosine of each embedding with its own key (1: the key encoders are the
  students). in_batch_negatives (ours; InfoNCE): the batch's other pairs' keys
  are negatives too (`losses.queue_info_nce`).
  class_positives (ours; InfoNCE, labelled queues): every key of the pair's
  teacher class in the batch and the queue is a positive (supervised
  contrastive, `losses.queue_info_nce(class_positives=True)`); logged:
  "positives_per_query".
  head_params (ours; InfoNCE): `projection_heads` parameters: the InfoNCE
  loss sees each modality's head on the students' unit embeddings, and the
  returned embeddings (what the queues receive) are the heads' outputs; the
  collapse signals and "pair_cosine" stay those of the students' embeddings
  (what retrieval uses), the heads' are logged with the prefix "head_".

  Returns (loss, (metrics, new student state, (photo, sketch) embeddings)).
  """
  for name, on in (("mask_same_class", mask_same_class), ("keys", keys is not None),
                   ("in_batch_negatives", in_batch_negatives),
                   ("class_positives", class_positives), ("head_params", head_params is not None)):
    if on and metric != "info_nce":
      raise ValueError(f"{name} applies to InfoNCE students, not metric={metric!r}")
  photos, sketches, photo_labels, sketch_labels = jax.tree.map(jax.lax.stop_gradient, pairs)
  variables = {"params": student_params, **student_state}
  prepare = lambda x: students.input_transform(resize(x, students.image_size))
  (photo, photo_features), variables = students.encode(variables, "photo", prepare(photos),
                                                       train=True)
  (sketch, sketch_features), variables = students.encode(variables, "sketch",
                                                         prepare(sketches), train=True)
  new_state = {k: v for k, v in variables.items() if k != "params"}
  extra = {}
  backbone = (photo, sketch)
  if head_params is not None:
    photo = apply_head(head_params["photo"], photo)
    sketch = apply_head(head_params["sketch"], sketch)
  if metric == "distillation":
    if teachers.photo_proxies is None or teachers.sketch_proxies is None:
      raise ValueError("distillation students need both teachers' classifiers, with the "
                       "students' feature width")
    loss = (distillation_loss(photo_features, teachers.photo(constants, photos)[0],
                              *teachers.photo_proxies(constants)) +
            distillation_loss(sketch_features, teachers.sketch(constants, sketches)[0],
                              *teachers.sketch_proxies(constants)))
  elif metric == "info_nce" and (mask_same_class or keys is not None or in_batch_negatives
                                 or class_positives):
    options = {"in_batch_negatives": in_batch_negatives}
    if mask_same_class and class_positives:
      raise ValueError("class_positives makes the queue keys of the pair's class positives; "
                       "mask_same_class (which drops them) does not combine with it")
    if mask_same_class:
      options.update(photo_labels=photo_labels, sketch_labels=sketch_labels)
      masked = losses.same_class_negatives(queues, photo_labels, sketch_labels)
      extra["masked_negatives"] = (jnp.mean(masked[0]) + jnp.mean(masked[1])) / 2
    if class_positives:
      options.update(photo_labels=photo_labels, sketch_labels=sketch_labels,
                     class_positives=True)
      extra["positives_per_query"] = losses.class_positive_counts(queues, photo_labels,
                                                                  sketch_labels)
    if keys is not None:
      options.update(photo_keys=keys[0], sketch_keys=keys[1])
      extra["key_cosine"] = jax.lax.stop_gradient(
          (jnp.mean(jnp.sum(photo * keys[0], -1)) + jnp.mean(jnp.sum(sketch * keys[1], -1))) / 2)
    loss = losses.queue_info_nce(photo, sketch, queues, temperature, **options)
  elif metric == "info_nce":
    loss = losses.queue_info_nce(photo, sketch, queues, temperature)
  elif metric == "proxy_anchor":
    if teachers.photo_proxies is None or teachers.sketch_proxies is None:
      raise ValueError("ProxyAnchor students need both teachers' classifiers as proxies, with "
                       "the students' feature width; use metric='info_nce' with this teacher")
    kernel_p, _ = teachers.photo_proxies(constants)
    kernel_s, _ = teachers.sketch_proxies(constants)
    loss = (losses.proxy_anchor_loss(photo, photo_labels, kernel_p.T) +
            losses.proxy_anchor_loss(sketch, sketch_labels, kernel_s.T))
  else:
    raise ValueError(f"unknown student metric {metric!r}; expected 'info_nce', "
                     "'proxy_anchor' or 'distillation'")
  num_photo_classes = jax.eval_shape(teachers.photo, constants, photos)[0].shape[-1]
  metrics = {"pair_cosine": jnp.mean(jnp.sum(backbone[0] * backbone[1], -1)), **extra,
             **jax.lax.stop_gradient(collapse_signals(
                 *backbone, photo_labels, sketch_labels,
                 teachers.sketch_of_photo(num_photo_classes)))}
  if head_params is not None:
    head = {"pair_cosine": jnp.mean(jnp.sum(photo * sketch, -1)),
            **collapse_signals(photo, sketch, photo_labels, sketch_labels,
                               teachers.sketch_of_photo(num_photo_classes))}
    metrics.update({f"head_{k}": jax.lax.stop_gradient(v) for k, v in head.items()})
  return loss, (metrics, new_state, (photo, sketch))


@dataclasses.dataclass(frozen=True)
class Schedule:
  """One period: `estimator_steps` estimator updates, then one student update.

  batch_size: pairs per estimator step (global); latent_dim: noise width.
  metric, temperature: the students' loss; official_queue: the queue of the
  code (updated only when K % B == 0).
  estimator: "dcgan" (the paper's) or "inversion" (ours: `invert_pairs`, pixels
    of `inversion_size` optimised directly, Adam at `inversion_learning_rate`,
    for `estimator_steps` steps; the DCGAN parameters are then unused).
  refine_steps, refine_step_size: ours, `refine_pairs` on the pairs the
    students learn from (0: off).
  conditional_classes: ours (a fix for the class collapse, not the paper's):
    > 0, the photo teacher's number of classes: each noise vector of an
    estimator step gets one of them (`balanced_targets`), `generate` receives it
    (class-conditional estimators, the same (noise, class) for both, so each
    pair is aimed at one class by construction) and L_oh is the cross-entropy
    with it (`estimator_loss(targets=...)`); "dcgan" only. 0: the paper's
    unconditional estimators.
  mask_same_class_negatives: ours, InfoNCE only: the queues (labelled, see
    `losses.Queues`) also hold each key's teacher label, and the keys of the
    pair's own class are no negatives (`student_loss(mask_same_class=True)`).
    False: the paper's InfoNCE, every queue key a negative.
  key_momentum: ours, InfoNCE only (MoCo's momentum encoder, against keys
    computed by students that move): > 0, the positives and the keys pushed to
    the queues come from key encoders, an exponential moving average of the
    students' parameters (k <- m k + (1 - m) q before each student step, as
    MoCo; their BatchNorm statistics their own, from their own train-mode
    pass), kept in `model_state["key_encoders"]`. 0: the paper's keys, the
    students' own embeddings (stop-gradient).
  in_batch_negatives: ours, InfoNCE only: the other pairs of the batch are
    negatives too (their keys), as in CLIP / SimCLR; with
    `mask_same_class_negatives` those of the pair's class are dropped as the
    queue's. False: the paper's, queue keys only.
  class_positives: ours, InfoNCE only (labelled queues): supervised
    contrastive on the pairs' teacher labels: every key of the pair's class
    in the batch and the queue is a positive (`student_loss`). False: the
    paper's, one positive (the pair's own key).
  student_grad_clip: ours: > 0, the students' gradient (with the heads' when
    `params["heads"]` is there) is clipped to this global norm before their
    optimiser (optax.clip_by_global_norm's rule); "grad_norm" stays the
    unclipped norm. 0: the paper's, no clipping.
  (Projection heads are no switch here: `params["heads"]` present, from
  `projection_heads`, turns them on; see `period_update`.)
  The baselines' sources (no estimator; `estimator_steps` unused):
    "gaussian"  the Gaussian prior: photos and sketches drawn independently,
                N(0, gaussian_std^2) per pixel clipped to [-1, 1], of side
                `gaussian_size` (the estimators' output side), each labelled by
                its teacher and paired by those labels (`pair_by_labels`);
    "real"      alternative data: the real photos and sketches `period_update`
                is given (other classes), labelled and paired the same way.
  """

  estimator_steps: int
  batch_size: int
  latent_dim: int
  metric: str = "info_nce"
  temperature: float = 0.07
  official_queue: bool = False
  estimator: str = "dcgan"
  inversion_size: int = 32
  inversion_learning_rate: float = 0.05
  refine_steps: int = 0
  refine_step_size: float = 0.02
  gaussian_size: int = 32
  gaussian_std: float = 0.5
  conditional_classes: int = 0
  mask_same_class_negatives: bool = False
  key_momentum: float = 0.0
  in_batch_negatives: bool = False
  class_positives: bool = False
  student_grad_clip: float = 0.0


ESTIMATORS = ("dcgan", "inversion", "gaussian", "real")


def balanced_targets(rng: jax.Array, batch_size: int, num_classes: int) -> jax.Array:
  """int [batch_size]: arange(batch_size) % num_classes in a random order, every
  class floor(B / C) or ceil(B / C) times (ours, the class-conditional targets)."""
  return jax.random.permutation(rng, jnp.arange(batch_size) % num_classes)


def photo_classes(teachers: Teachers, constants: Any, size: int) -> int:
  """The number of the photo teacher's classes (its logits' width), by shape only."""
  return jax.eval_shape(teachers.photo, constants, jnp.zeros((1, size, size, 3)))[0].shape[-1]


def labelled_pairs(rng: jax.Array, photos: jax.Array, sketches: jax.Array, constants: Any,
                   teachers: Teachers) -> tuple[tuple, dict]:
  """Unpaired photos [B, S, S, 3] and sketches [B, S', S', 3] -> (photos, the
  sketch of each photo by `pair_by_labels`, photo labels, sketch labels) and
  {"distinct_photo_labels": number of classes among the photo labels}."""
  photo_logits = teachers.photo(constants, photos)[0]
  photo_labels = jnp.argmax(photo_logits, -1)
  sketch_labels = jnp.argmax(teachers.sketch(constants, sketches)[0], -1)
  partner = pair_by_labels(rng, photo_labels, sketch_labels,
                           teachers.sketch_of_photo(photo_logits.shape[-1]))
  distinct = jnp.sum(jnp.any(jax.nn.one_hot(photo_labels, photo_logits.shape[-1]) > 0, 0))
  return ((photos, sketches[partner], photo_labels, sketch_labels[partner]),
          {"distinct_photo_labels": distinct.astype(jnp.float32)})


def invert_pairs(rng: jax.Array, constants: Any, *, teachers: Teachers, students: Students,
                 student_variables: Any, weights: Weights, num_classes: int, per_class: int,
                 size: int, steps: int, learning_rate: float) -> tuple[tuple, dict]:
  """Model inversion (DAFL / DeepInversion style, ours): for each class of the
  photo teacher (`jax.vmap` over classes), `per_class` photo and sketch images
  are optimised directly, `steps` Adam steps on unconstrained pixels (tanh to
  [-1, 1]), against the estimator loss with the one-hot term aimed at that
  class in both teachers (the sketch teacher's class of the same name, else
  its own argmax) and the other terms as `weights` say.

  Returns ((photos, sketches, photo labels, sketch labels), metrics), the images
  [num_classes * per_class, size, size, 3].
  """
  optimizer = optax.adam(learning_rate)

  def one_class(target: jax.Array, key: jax.Array):
    pixels = {m: 0.1 * jax.random.normal(k, (per_class, size, size, 3))
              for m, k in zip(("photo", "sketch"), jax.random.split(key))}
    generate = lambda p, state, noise: ((jnp.tanh(p["photo"]), jnp.tanh(p["sketch"])), state)
    # One class per batch: the class-spreading L_ie would fight the target.
    untargeted = dataclasses.replace(weights, one_hot=0.0, info_entropy=0.0)

    def loss(p):
      total, (terms, _, pairs) = estimator_loss(
          p, {}, generate=generate, noise=None, teachers=teachers, students=students,
          student_variables=student_variables, constants=constants, weights=untargeted)
      photo_logits = teachers.photo(constants, pairs[0])[0]
      sketch_logits = teachers.sketch(constants, pairs[1])[0]
      targets = jnp.full(per_class, target)
      aimed = (losses.class_target_loss(photo_logits, targets) + losses.class_target_loss(
          sketch_logits, sketch_targets(teachers, targets, num_classes, sketch_logits)))
      return total + weights.one_hot * aimed, (terms, aimed, pairs)

    def step(carry, _):
      p, state = carry
      grads, (terms, aimed, _) = jax.grad(loss, has_aux=True)(p)
      updates, state = optimizer.update(grads, state, p)
      return (optax.apply_updates(p, updates), state), {"aimed_ce": aimed, **terms}

    (pixels, _), trace = jax.lax.scan(step, (pixels, optimizer.init(pixels)), None, length=steps)
    _, (_, _, pairs) = loss(pixels)
    return pairs, jax.tree.map(lambda x: x[-1], trace)

  pairs, metrics = jax.vmap(one_class)(jnp.arange(num_classes),
                                       jax.random.split(rng, num_classes))
  pairs = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), pairs)
  return pairs, {f"inversion_{k}": jnp.mean(v) for k, v in metrics.items()}


def disagreement(photos: jax.Array, sketches: jax.Array, constants: Any, *, teachers: Teachers,
                 students: Students, student_variables: Any) -> jax.Array:
  """How much the students disagree with the teachers on a batch of pairs
  (ours, after the paper's metric-agnostic idea): KL(teacher || student) of
  class probabilities, the student's through the teacher's classifier (where
  its proxies fit), plus the squared Euclidean distance between the students'
  photo and sketch embeddings of each pair. Summed over the batch."""
  total, embeddings = 0.0, {}
  for modality, images, teacher, proxies in (
      ("photo", photos, teachers.photo, teachers.photo_proxies),
      ("sketch", sketches, teachers.sketch, teachers.sketch_proxies)):
    (embedding, features), _ = students.encode(
        student_variables, modality,
        students.input_transform(resize(images, students.image_size)), train=False)
    embeddings[modality] = embedding
    if proxies is not None:
      kernel, bias = proxies(constants)
      teacher_log_p = jax.nn.log_softmax(teacher(constants, images)[0], -1)
      student_log_p = jax.nn.log_softmax(features @ kernel + bias, -1)
      total += jnp.sum(jnp.exp(teacher_log_p) * (teacher_log_p - student_log_p))
  return total + jnp.sum(jnp.square(embeddings["photo"] - embeddings["sketch"]))


def refine_pairs(photos: jax.Array, sketches: jax.Array, constants: Any, *, teachers: Teachers,
                 students: Students, student_variables: Any, steps: int,
                 step_size: float) -> tuple[jax.Array, jax.Array]:
  """`steps` signed-gradient ascent steps of `disagreement` on the pixels of
  both images of every pair (ours), kept in [-1, 1]: pairs the students get
  wrong in both the probability and the embedding space."""

  def step(images, _):
    grads = jax.grad(lambda x: disagreement(*x, constants, teachers=teachers, students=students,
                                            student_variables=student_variables))(images)
    return tuple(jnp.clip(x + step_size * jnp.sign(g), -1.0, 1.0)
                 for x, g in zip(images, grads)), None

  (photos, sketches), _ = jax.lax.scan(step, (photos, sketches), None, length=steps)
  return photos, sketches


def momentum_update(key_params: Any, params: Any, momentum: float) -> Any:
  """MoCo's key-encoder update, leaf by leaf: momentum * key + (1 - momentum) * params."""
  return jax.tree.map(lambda k, q: momentum * k + (1.0 - momentum) * q, key_params, params)


def key_embeddings(key_variables: Any, students: Students, photos: jax.Array,
                   sketches: jax.Array) -> tuple[tuple[jax.Array, jax.Array], Any]:
  """Ours: the pairs' keys from the key encoders (`Schedule.key_momentum`), run
  as the students are in their step (train mode, same input handling):
  ((photo keys, sketch keys) [B, D] unit, no gradient; key variables with
  their own updated BatchNorm statistics)."""
  prepare = lambda x: students.input_transform(resize(x, students.image_size))
  (photo, _), key_variables = students.encode(key_variables, "photo", prepare(photos), train=True)
  (sketch, _), key_variables = students.encode(key_variables, "sketch", prepare(sketches),
                                               train=True)
  return jax.lax.stop_gradient((photo, sketch)), key_variables


def _check_contrastive_switches(schedule: "Schedule", model_state: dict,
                                params: dict | None = None) -> None:
  """Clear errors for the key-encoder, in-batch, class-positive and head switches (ours)."""
  heads = params is not None and "heads" in params
  for name, on in (("key_momentum", schedule.key_momentum),
                   ("in_batch_negatives", schedule.in_batch_negatives),
                   ("class_positives", schedule.class_positives)):
    if on and schedule.metric != "info_nce":
      raise ValueError(f"Schedule.{name} applies to InfoNCE students, not "
                       f"metric={schedule.metric!r}")
  if heads and schedule.metric != "info_nce":
    raise ValueError("projection heads (params['heads']) apply to InfoNCE students, not "
                     f"metric={schedule.metric!r}")
  if heads and schedule.key_momentum:
    raise ValueError("projection heads (params['heads']) and key_momentum do not combine: the "
                     "key encoders have no heads")
  if schedule.class_positives and schedule.mask_same_class_negatives:
    raise ValueError("Schedule.class_positives makes the keys of the pair's class positives; "
                     "mask_same_class_negatives (which drops them) does not combine with it")
  if schedule.student_grad_clip < 0:
    raise ValueError(f"Schedule.student_grad_clip must be >= 0, got {schedule.student_grad_clip}")
  if not 0.0 <= schedule.key_momentum < 1.0:
    raise ValueError(f"Schedule.key_momentum must be in [0, 1), got {schedule.key_momentum}")
  if bool(schedule.key_momentum) != ("key_encoders" in model_state):
    raise ValueError("Schedule.key_momentum > 0 needs model_state['key_encoders'] (the "
                     "students' initial variables, {'params': ..., **state}), and only it "
                     f"(key_momentum={schedule.key_momentum}, key encoders given: "
                     f"{'key_encoders' in model_state})")


def period_update(params: dict, model_state: dict, opt_state: dict, rng: jax.Array,
                  constants: Any, *, generate: Callable, teachers: Teachers,
                  students: Students, weights: Weights, schedule: Schedule,
                  optimizers: dict[str, optax.GradientTransformation],
                  shard: Callable[[jax.Array], jax.Array] = lambda x: x,
                  real: tuple[jax.Array, jax.Array] | None = None
                  ) -> tuple[dict, dict, dict, dict]:
  """One schedule period. params {"estimators", "students"} (+ "heads", ours:
  `projection_heads` for the InfoNCE loss, trained with the students by
  `optimizers["heads"]`); model_state
  {"estimators", "students", "queues"} (+ "key_encoders" with
  `schedule.key_momentum`); opt_state per group; `shard` places the
  noise batch on the devices (a sharding constraint); `real` (photos, sketches)
  [B, S, S, 3] in [-1, 1] for `schedule.estimator == "real"`. Returns the
  updated (params, model_state, opt_state, metrics)."""
  student_variables = {"params": params["students"], **model_state["students"]}
  _check_contrastive_switches(schedule, model_state, params)
  num_classes = schedule.conditional_classes
  if num_classes and schedule.estimator != "dcgan":
    raise ValueError("Schedule.conditional_classes needs the DCGAN estimators, not "
                     f"estimator={schedule.estimator!r}")

  def estimator_step(carry, index):
    est_params, est_state, est_opt = carry
    key = jax.random.fold_in(rng, index)
    noise = shard(jax.random.normal(key, (schedule.batch_size, schedule.latent_dim)))
    targets = (shard(balanced_targets(jax.random.fold_in(key, 1), schedule.batch_size,
                                      num_classes)) if num_classes else None)
    (loss, (terms, est_state, pairs)), grads = jax.value_and_grad(
        estimator_loss, has_aux=True)(
            est_params, est_state, generate=generate, noise=noise, teachers=teachers,
            students=students, student_variables=student_variables, constants=constants,
            weights=weights, targets=targets)
    updates, est_opt = optimizers["estimators"].update(grads, est_opt, est_params)
    est_params = optax.apply_updates(est_params, updates)
    out = {"estimator_loss": loss, "estimator_grad_norm": optax.tree.norm(grads),
           **{f"L_{name}": value for name, value in terms.items()}}
    if num_classes:  # how often each teacher's argmax is the assigned class
      out["photo_target_hit"] = jnp.mean((pairs[2] == targets).astype(jnp.float32))
      out["sketch_target_hit"] = jnp.mean(
          (pairs[3] == teachers.sketch_of_photo(num_classes)[targets]).astype(jnp.float32))
    return (est_params, est_state, est_opt), (out, pairs)

  carry = (params["estimators"], model_state["estimators"], opt_state["estimators"])
  if schedule.estimator == "dcgan":
    carry, (per_step, pairs) = jax.lax.scan(estimator_step, carry,
                                            jnp.arange(schedule.estimator_steps))
    last_pairs = jax.tree.map(lambda x: x[-1], pairs)
    per_step = jax.tree.map(jnp.mean, per_step)
  elif schedule.estimator == "inversion":
    num_classes = photo_classes(teachers, constants, schedule.inversion_size)
    last_pairs, per_step = invert_pairs(
        rng, constants, teachers=teachers, students=students,
        student_variables=student_variables, weights=weights, num_classes=num_classes,
        per_class=max(1, schedule.batch_size // num_classes), size=schedule.inversion_size,
        steps=schedule.estimator_steps, learning_rate=schedule.inversion_learning_rate)
  elif schedule.estimator in ("gaussian", "real"):
    pair_rng, draw_rng = jax.random.split(rng)
    if schedule.estimator == "gaussian":
      shape = (schedule.batch_size, schedule.gaussian_size, schedule.gaussian_size, 3)
      photos, sketches = (shard(jnp.clip(schedule.gaussian_std * jax.random.normal(k, shape),
                                         -1.0, 1.0)) for k in jax.random.split(draw_rng))
    elif real is None:
      raise ValueError("estimator 'real' (alternative data) needs the real images")
    else:
      photos, sketches = real
    last_pairs, per_step = labelled_pairs(pair_rng, photos, sketches, constants, teachers)
  else:
    raise ValueError(f"unknown estimator {schedule.estimator!r}; expected one of {ESTIMATORS}")
  est_params, est_state, est_opt = carry
  if schedule.refine_steps:
    photos, sketches = refine_pairs(
        last_pairs[0], last_pairs[1], constants, teachers=teachers, students=students,
        student_variables=student_variables, steps=schedule.refine_steps,
        step_size=schedule.refine_step_size)
    last_pairs = (photos, sketches, *last_pairs[2:])
  keys, new_state = None, {}
  if schedule.key_momentum:  # MoCo: the key encoders move first, then compute the keys
    key_variables = {**model_state["key_encoders"], "params": momentum_update(
        model_state["key_encoders"]["params"], params["students"], schedule.key_momentum)}
    keys, new_state["key_encoders"] = key_embeddings(key_variables, students, *last_pairs[:2])
  loss_of = functools.partial(
      student_loss, students=students, pairs=last_pairs, teachers=teachers, constants=constants,
      queues=model_state["queues"], metric=schedule.metric, temperature=schedule.temperature,
      mask_same_class=schedule.mask_same_class_negatives, keys=keys,
      in_batch_negatives=schedule.in_batch_negatives, class_positives=schedule.class_positives)
  # ours: the heads (None without them: no gradient) learn with the students, one clipping
  (loss, (metrics, student_state, (photo, sketch))), (grads, head_grads) = jax.value_and_grad(
      lambda p, h, s: loss_of(p, s, head_params=h), argnums=(0, 1), has_aux=True)(
          params["students"], params.get("heads"), model_state["students"])
  grad_norm = optax.tree.norm((grads, head_grads))
  if schedule.student_grad_clip:
    grads, head_grads = clip_by_global_norm((grads, head_grads), grad_norm,
                                            schedule.student_grad_clip)
  new_params, new_opt = {}, {}
  if "heads" in params:
    head_updates, new_opt["heads"] = optimizers["heads"].update(head_grads, opt_state["heads"],
                                                                params["heads"])
    new_params["heads"] = optax.apply_updates(params["heads"], head_updates)
    metrics["head_grad_norm"] = optax.tree.norm(head_grads)
  updates, student_opt = optimizers["students"].update(grads, opt_state["students"],
                                                       params["students"])
  labels = ({"sketch_labels": last_pairs[3], "photo_labels": last_pairs[2]}
            if schedule.mask_same_class_negatives or schedule.class_positives else {})
  if keys is not None:
    photo, sketch = keys
  queues = model_state["queues"].push(sketch, photo, official=schedule.official_queue, **labels)
  agreement = jnp.mean((last_pairs[2] == last_pairs[3]).astype(jnp.float32))
  metrics = {**per_step, **metrics, "loss": loss,
             "grad_norm": grad_norm, "teacher_label_agreement": agreement}
  return ({"estimators": est_params, "students": optax.apply_updates(params["students"], updates),
           **new_params},
          {"estimators": est_state, "students": student_state, "queues": queues, **new_state},
          {"estimators": est_opt, "students": student_opt, **new_opt}, metrics)


def clip_by_global_norm(tree: Any, norm: jax.Array, max_norm: float) -> Any:
  """optax.clip_by_global_norm's rule with the norm given: the tree as it is
  where norm < max_norm, else scaled to max_norm (ours, `Schedule.student_grad_clip`)."""
  return jax.tree.map(lambda g: jnp.where(norm < max_norm, g, g / norm * max_norm), tree)


def two_group_optimizer(optimizers: dict[str, optax.GradientTransformation]
                        ) -> optax.GradientTransformation:
  """One transformation over {group: params} applying each group's own
  optimiser (state {group: state}); `period_update` calls the groups'
  optimisers one at a time, so a group's momentum moves only when it is
  updated."""

  def init(params):
    return {name: tx.init(params[name]) for name, tx in optimizers.items()}

  def update(grads, state, params=None):
    out = {name: tx.update(grads[name], state[name], None if params is None else params[name])
           for name, tx in optimizers.items()}
    return {n: o[0] for n, o in out.items()}, {n: o[1] for n, o in out.items()}

  return optax.GradientTransformation(init, update)
