"""Stroke Location Inversion (SLI; SketchXAI, CVPR 2023; spec A.3, A.5).

Keep every stroke's shape and order, free the start points of the real
strokes, and move them by plain SGD through a frozen classifier until it
predicts a target class:
  recovery  start from N(0, 0.1^2) locations, target = the true class;
  transfer  start from the true locations, target = another class.

Step i (0-based, of `steps`): g = d CE(f(loc), target) / d loc on the real
strokes only (padding slots never move); lr_i = lr_min + (lr - lr_min) *
(1 + cos(pi i / steps)) / 2 (torch CosineAnnealingLR, T_max = steps); the
global norm of g is clipped to clip / (lr_i + 1e-8) with torch's coefficient
max_norm / (||g|| + 1e-6), so no step is longer than `clip` canvas units;
loc <- loc - lr_i * g.

Every run (a sketch and one of its random starts, a "path") is independent,
as with the official batch size 1: `invert` runs all of them in one
`lax.scan`, each step one pass of the model over every run (the gradient of
the summed losses is each run's own gradient; each is clipped on its own).
Records hold T + 1 = steps + 1 entries: entry i is the state
before update i (as the official logs), entry T the state after the last
update (one extra forward).

The classifier is called with the full batch dict at every step. Work that
does not depend on the locations belongs outside the loop: for SketchXAINet,
pass the batch through `sketchxainet.with_shape_embeddings` first (the BiLSTM
then runs once, over the real strokes only, instead of over every slot).

Shapes: B sketches, K paths, S stroke slots, C classes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Batch = Mapping[str, jax.Array]
ApplyLogits = Callable[[Batch], jax.Array]  # batch dict -> logits float32[B, C]

# Inputs laid out per batch shard rather than per sketch: SLI drops them (the
# model then runs its shape encoder over every slot).
_PACKED_KEYS = ("packed_points", "packed_index")


@dataclasses.dataclass(frozen=True)
class SLIConfig:
  """The published SLI constants (spec A.3) and the recovery threshold.

  Attributes:
    steps: SGD steps (the official `optim_times`).
    lr: initial learning rate.
    lr_min: final learning rate of the cosine schedule (eta_min).
    clip: the longest step, in canvas units ([-1, 1] square): the gradient's
      global norm is clipped to clip / (lr_i + 1e-8).
    init_std: standard deviation of the recovery start points.
    recovered_within: a recovered stroke counts as found when its start point
      is within this L2 distance of the truth (not in the official code).
  """

  steps: int = 100
  lr: float = 10.0
  lr_min: float = 1e-5
  clip: float = 0.5
  init_std: float = 0.1
  recovered_within: float = 0.1


class SLIResult(NamedTuple):
  """The trajectories of B x K inversions over T + 1 = steps + 1 records.

  Attributes:
    target_prob: float32[B, K, T + 1] softmax probability of the target class.
    label_prob: float32[B, K, T + 1] probability of the sketch's own class.
    prediction: int32[B, K, T + 1] argmax class.
    locations: float32[B, K, T + 1, S, 2] start points of every slot.
  """

  target_prob: jax.Array
  label_prob: jax.Array
  prediction: jax.Array
  locations: jax.Array


def learning_rate(step: jax.Array, config: SLIConfig) -> jax.Array:
  """lr of 0-based step `step`: cosine from `lr` at 0 towards `lr_min` at `steps`.

  (1 + cos(pi i / T)) / 2 is computed as cos(pi i / 2T)^2, exact in float32
  near the end where 1 + cos would cancel.
  """
  cosine = jnp.cos(0.5 * jnp.pi * step / config.steps) ** 2
  return config.lr_min + (config.lr - config.lr_min) * cosine


def clip_gradient(grad: jax.Array, lr: jax.Array, config: SLIConfig) -> jax.Array:
  """torch clip_grad_norm_(max_norm = clip / (lr + 1e-8)) of one run's gradient [S, 2]."""
  max_norm = config.clip / (lr + 1e-8)
  coefficient = max_norm / (jnp.sqrt(jnp.sum(grad**2)) + 1e-6)
  return grad * jnp.minimum(coefficient, 1.0)


@functools.partial(jax.jit, static_argnames=("paths", "std"))
def recovery_init(rng: jax.Array, batch: Batch, paths: int, std: float = 0.1) -> jax.Array:
  """Random starts float32[B, K, S, 2]: N(0, std^2) for real strokes, the batch's
  own `loc` (0) for padding slots."""
  loc = batch["loc"].astype(jnp.float32)
  real = (batch["stroke_len"] > 0)[:, None, :, None]
  noise = std * jax.random.normal(rng, (loc.shape[0], paths, *loc.shape[1:]), jnp.float32)
  return jnp.where(real, noise, loc[:, None])


@functools.partial(jax.jit, static_argnames="num_classes")
def transfer_targets(rng: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """(y + U{1..C-1}) mod C of every label (any shape): a uniformly random other class."""
  shift = jax.random.randint(rng, labels.shape, 1, num_classes)
  return ((labels + shift) % num_classes).astype(jnp.int32)


def _invert_runs(apply_logits: ApplyLogits, runs: Batch, targets: jax.Array,
                 init_loc: jax.Array, config: SLIConfig) -> SLIResult:
  """R independent runs as one batch: runs holds [R, ...] arrays, init_loc [R, S, 2].

  The loss is the sum of the runs' cross-entropies: the classifier keeps
  sketches apart, so its gradient with respect to a run's locations is that
  run's own gradient, and every step is one forward and backward pass of the
  model over all R runs (dense matmuls over R x S tokens). Each run's
  gradient is clipped on its own, as with batch size 1.
  """
  real = (runs["stroke_len"] > 0)[..., None]  # [R, S, 1]
  labels = runs["label"]
  rows = jnp.arange(len(targets))

  def loss_and_logits(loc):
    logits = apply_logits({**runs, "loc": loc}).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.sum(losses), logits

  def record(logits, loc):
    probs = jax.nn.softmax(logits)
    return (probs[rows, targets], probs[rows, labels],
            jnp.argmax(logits, -1).astype(jnp.int32), loc)

  def step(loc, i):
    (_, logits), grad = jax.value_and_grad(loss_and_logits, has_aux=True)(loc)
    lr = learning_rate(i, config)
    grad = jax.vmap(clip_gradient, in_axes=(0, None, None))(jnp.where(real, grad, 0.0), lr,
                                                            config)
    return loc - lr * grad, record(logits, loc)

  final_loc, records = jax.lax.scan(step, init_loc, jnp.arange(config.steps))
  final = record(loss_and_logits(final_loc)[1], final_loc)
  # records are [T, R, ...]: runs first, then the T + 1 records
  return SLIResult(*(jnp.moveaxis(jnp.concatenate([r, f[None]]), 0, 1)
                     for r, f in zip(records, final)))


def invert(apply_logits: ApplyLogits, batch: Batch, targets: jax.Array, init_loc: jax.Array,
           config: SLIConfig) -> SLIResult:
  """Runs SLI for B sketches x K paths (pure; call it inside `jax.jit`).

  Args:
    apply_logits: the frozen classifier, a batch dict -> float32[B', C]; it is
      called on all B x K runs at once (B' = B * K, each sketch repeated K
      times), so it must not mix sketches of a batch (true of any model in
      inference mode).
    batch: the tokeniser's dict with points [B, S, P, 4] (or SketchXAINet's
      precomputed shape_embedding [B, S, H]), stroke_len [B, S], loc [B, S, 2],
      label [B] and optionally other per-sketch arrays; the per-shard packed
      rows (packed_points, packed_index) are dropped.
    targets: int[B] (every path of a sketch) or int[B, K] target classes.
    init_loc: float32[B, K, S, 2] start points; padding slots keep theirs.
    config: the SLI constants.

  Returns:
    The trajectories (`SLIResult`), records before each update plus the final state.
  """
  sketches = {k: jnp.asarray(v) for k, v in batch.items() if k not in _PACKED_KEYS}
  init_loc = jnp.asarray(init_loc, jnp.float32)
  num_sketches, paths = init_loc.shape[:2]
  if init_loc.shape[2:] != sketches["loc"].shape[1:] or num_sketches != len(sketches["loc"]):
    raise ValueError(f"init_loc {init_loc.shape} does not match the batch's loc "
                     f"{sketches['loc'].shape} as [B, K, S, 2]")
  targets = jnp.broadcast_to(jnp.asarray(targets, jnp.int32).reshape(num_sketches, -1),
                             (num_sketches, paths))
  runs = {k: jnp.repeat(v, paths, axis=0) for k, v in sketches.items()}  # run = b * K + k
  result = _invert_runs(apply_logits, runs, targets.reshape(-1),
                        init_loc.reshape(num_sketches * paths, *init_loc.shape[2:]), config)
  return SLIResult(*(x.reshape(num_sketches, paths, *x.shape[1:]) for x in result))


def jit_inverter(apply_fn: Callable, config: SLIConfig) -> Callable[..., SLIResult]:
  """`invert` jitted, with the model's parameters an argument (not baked-in constants).

  Args:
    apply_fn: (params, batch) -> logits float32[B, C].
    config: the SLI constants.

  Returns:
    fn(params, batch, targets, init_loc) -> SLIResult.
  """

  def run(params, batch, targets, init_loc):
    return invert(functools.partial(apply_fn, params), batch, targets, init_loc, config)

  return jax.jit(run)


def path_metrics(result: SLIResult, targets: jax.Array, batch: Batch, config: SLIConfig,
                 true_loc: jax.Array | None = None) -> dict[str, np.ndarray]:
  """Per sketch and path float[B, K] outcomes after the last step.

  success (argmax == target), target_prob, label_prob (of the sketch's own
  class); with `true_loc` float[B, S, 2]
  (recovery) also error (mean L2 distance of the real strokes' start points
  to the truth) and all_within (1 when every real stroke is within
  `config.recovered_within` of the truth).
  """
  targets = np.broadcast_to(np.asarray(targets).reshape(len(result.prediction), -1),
                            result.prediction.shape[:2])
  out = {"success": (np.asarray(result.prediction[:, :, -1]) == targets).astype(np.float64),
         "target_prob": np.asarray(result.target_prob[:, :, -1], np.float64),
         "label_prob": np.asarray(result.label_prob[:, :, -1], np.float64)}
  if true_loc is not None:
    real = np.asarray(batch["stroke_len"]) > 0  # [B, S]
    distance = np.linalg.norm(np.asarray(result.locations[:, :, -1])
                              - np.asarray(true_loc)[:, None], axis=-1)  # [B, K, S]
    out["error"] = ((distance * real[:, None]).sum(-1)
                    / np.maximum(real.sum(-1), 1)[:, None])
    out["all_within"] = np.all((distance <= config.recovered_within) | ~real[:, None],
                               axis=-1).astype(np.float64)
  return out


def summarize(per_path: Mapping[str, np.ndarray], weight: np.ndarray) -> dict[str, float]:
  """Dataset-level metrics from `path_metrics` outputs concatenated over batches.

  `<name>_mean_over_paths` averages every (sketch, path) run;
  `<name>_best_of_paths` takes, per sketch, the path with the highest final
  target probability (a choice that needs no ground truth). Sketches are
  weighted by `weight` float[N] (0 for batch padding).
  """
  weight = np.asarray(weight, np.float64)
  total = max(weight.sum(), 1e-12)
  best = np.argmax(per_path["target_prob"], axis=1)  # [N]
  summary = {"sketches": float(weight.sum()), "paths": int(per_path["target_prob"].shape[1])}
  for name, values in per_path.items():
    summary[f"{name}_mean_over_paths"] = float((values.mean(1) * weight).sum() / total)
    chosen = np.take_along_axis(values, best[:, None], axis=1)[:, 0]
    summary[f"{name}_best_of_paths"] = float((chosen * weight).sum() / total)
  return summary
