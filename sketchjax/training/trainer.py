"""The generic sharded trainer: state, train step, evaluation, checkpoints, logging.

A task supplies an `Objective` (init, train loss, eval sums) and host-local
batch iterators; `train_and_evaluate` does the rest on a device mesh (batch
split over all devices, parameters replicated or FSDP-sharded).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Iterator

from absl import logging
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import ml_collections
import numpy as np
import optax

from sketchjax.training import checkpoint as checkpoint_lib
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import metrics as metrics_lib
from sketchjax.training import microbatch
from sketchjax.training import optim
from sketchjax.training import preemption
from sketchjax.training import progress as progress_lib

Batch = dict[str, Any]
Preempted = preemption.Preempted


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a task trains.

  init: (rng, example batch) -> params pytree; traced (under jax.eval_shape and
    jax.jit), so it must only use the batch's shapes.
  loss: (params, global batch, dropout rng) -> (scalar mean loss, dict of
    scalar metrics); train mode.
  evaluate: (params, global batch) -> dict of per-batch SUMS of scalar metrics
    including "count"; eval batches carry "weight" [B], 0 for padding examples.
  stateful: the model carries state that is not trained by gradients (BatchNorm
    statistics, negative queues). Then init returns (params, model_state),
    loss is (params, model_state, batch, rng) -> (loss, (metrics, new
    model_state)), and evaluate (and a custom eval) receive (params,
    model_state) in place of params. Stateful objectives take the whole global
    batch in one step (no micro-batches): their state updates are sequential.
  update: for schedules a single gradient step cannot express (several
    parameter groups updated in turn, inner loops: CrossX-DFL's estimator
    steps then an encoder step), replaces loss-gradient-apply: (params,
    model_state, opt_state, global batch, rng, constants) -> (params,
    model_state, opt_state, metrics with scalar "loss" and "grad_norm").
    Needs stateful=True; `loss` is then unused.
  optimizer: the optimiser of the objective's params (e.g. an
    `optax.multi_transform` of several groups), in place of the one of
    config.optimizer.
  constants: frozen arrays the update reads (pretrained teachers), passed to
    it as an argument (never baked into the program, never checkpointed).
  """

  init: Callable[[jax.Array, Batch], Any]
  loss: Callable[..., tuple[jax.Array, Any]] | None
  evaluate: Callable[[Any, Batch], dict[str, jax.Array]] | None
  stateful: bool = False
  update: Callable[..., tuple[Any, Any, Any, dict]] | None = None
  optimizer: optax.GradientTransformation | None = None
  constants: Any = None

  def make_optimizer(self, config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """`optimizer`, or the one of config.optimizer."""
    if self.optimizer is not None:
      return self.optimizer
    return optim.make_optimizer(config.optimizer, config.train.num_steps)


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 [], steps done
  params: Any
  opt_state: optax.OptState
  rng: jax.Array  # typed key []; the dropout key of a step is fold_in(rng, step)
  model_state: Any = flax.struct.field(default_factory=dict)  # {} unless stateful

  def eval_variables(self, objective: Objective) -> Any:
    """What objective.evaluate takes: params, or (params, model_state) if stateful."""
    return (self.params, self.model_state) if objective.stateful else self.params


def default_config() -> ml_collections.ConfigDict:
  """The trainer's config keys with their defaults (tasks set the rest)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.train = ml_collections.ConfigDict(dict(
      num_steps=1000, log_every=50, eval_every=1000, checkpoint_every=1000,
      keep_checkpoints=3, stop_on_nan=True))
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=3e-4, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8,
      schedule="sketchxai", schedule_step_every=2000, schedule_period=20,
      warmup_steps=0, grad_clip_norm=0.0))
  config.mesh = ml_collections.ConfigDict(dict(fsdp=1))
  return config


def _abstract_state(objective: Objective, tx: optax.GradientTransformation,
                    example_batch: Batch, seed: int, mesh: Mesh):
  """(init function of (key, batch), abstract state with shardings, state shardings)."""

  def init(key: jax.Array, batch: Batch) -> TrainState:
    init_rng, train_rng = jax.random.split(key)
    params, model_state = (objective.init(init_rng, batch) if objective.stateful
                           else (objective.init(init_rng, batch), {}))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=train_rng, model_state=model_state)

  shapes = jax.eval_shape(init, jax.random.key(seed), example_batch)
  shardings = mesh_lib.state_shardings(shapes, mesh)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          shapes, shardings)
  return init, abstract, shardings


def _make_train_step(objective: Objective, tx: optax.GradientTransformation,
                     schedule: optax.Schedule, state_shardings: Any, mesh: Mesh,
                     num_microbatches: int = 1):
  """jit (state, global batch) -> (state, metrics); donates the state.

  Gradients accumulate over `num_microbatches` (see `microbatch.py`).
  """
  if objective.stateful and num_microbatches != 1:
    raise ValueError(f"train.microbatches={num_microbatches}: a stateful objective "
                     "(BatchNorm statistics, queues) trains on whole batches; set it to 1")
  if objective.update is not None and not objective.stateful:
    raise ValueError("an Objective with its own update must be stateful")

  def loss_and_grads(state: TrainState, batch: Batch, dropout_rng: jax.Array):
    """((loss, metrics), grads, new model state)."""
    if not objective.stateful:
      (loss, metrics), grads = microbatch.value_and_grad(
          objective.loss, state.params, batch, dropout_rng,
          num_microbatches=num_microbatches, num_shards=mesh.size)
      return (loss, metrics), grads, state.model_state
    (loss, (metrics, model_state)), grads = jax.value_and_grad(
        lambda p: objective.loss(p, state.model_state, batch, dropout_rng), has_aux=True)(
            state.params)
    return (loss, metrics), grads, model_state

  def custom_step(state: TrainState, batch: Batch, constants: Any) -> tuple[TrainState, dict]:
    params, model_state, opt_state, metrics = objective.update(
        state.params, state.model_state, state.opt_state, batch,
        jax.random.fold_in(state.rng, state.step), constants)
    metrics = {"learning_rate": schedule(state.step), **metrics}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=model_state), metrics

  def train_step(state: TrainState, batch: Batch, constants: Any) -> tuple[TrainState, dict]:
    if objective.update is not None:
      return custom_step(state, batch, constants)
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    (loss, metrics), grads, model_state = loss_and_grads(state, batch, dropout_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=model_state), metrics

  return jax.jit(train_step, donate_argnums=0,
                 out_shardings=(state_shardings, mesh_lib.replicated(mesh)))


def evaluate(config: ml_collections.ConfigDict, params: Any, objective: Objective,
             eval_iter: Iterable[Batch], mesh: Mesh) -> dict[str, float]:
  """Means (sums / count, in float64) of objective.evaluate over all batches of
  `eval_iter` (host-local batches), plus "count", computed in
  `config.train.microbatches` micro-batches. Every process must yield the same
  number of batches (pad with weight-0 examples)."""
  num_microbatches = config.train.get("microbatches", 1)

  def eval_sums(params: Any, batch: Batch) -> dict:
    return microbatch.summed(lambda b: objective.evaluate(params, b), batch,
                             num_microbatches=num_microbatches, num_shards=mesh.size)

  eval_step = jax.jit(eval_sums, out_shardings=mesh_lib.replicated(mesh))
  with jax.set_mesh(mesh):
    per_batch = [eval_step(params, mesh_lib.to_global(batch, mesh)) for batch in eval_iter]
  if not per_batch:
    raise ValueError("the eval iterator yielded no batches")
  sums = jax.tree.map(lambda *xs: np.sum(np.asarray(xs, np.float64)),
                      *jax.device_get(per_batch))
  count = sums.get("count", 0.0)
  if count <= 0:
    raise ValueError(f"objective.evaluate must return a positive 'count'; got sums {sums}")
  return {name: float(total if name == "count" else total / count)
          for name, total in sums.items()}


def restore_params(workdir: str, objective: Objective, example_batch: Batch,
                   config: ml_collections.ConfigDict, mesh: Mesh | None = None,
                   step: int | None = None) -> Any:
  """Parameters of the checkpoint of `step` in workdir (default: the latest), for
  evaluation and inference; (params, model_state) for a stateful objective."""
  mesh = mesh or mesh_lib.make_mesh(config.mesh.fsdp)
  tx = objective.make_optimizer(config)
  _, abstract, _ = _abstract_state(objective, tx, example_batch, config.seed, mesh)
  checkpointer = checkpoint_lib.Checkpointer(_checkpoint_dir(workdir),
                                             config.train.keep_checkpoints)
  try:
    if step is None:
      restored = checkpointer.restore_latest(abstract, data_iterator=None,
                                             set_aside_unreadable=False)
    elif step in checkpointer.all_steps():
      restored = step, checkpointer.restore(step, abstract, data_iterator=None)
    else:
      raise FileNotFoundError(f"no checkpoint of step {step} in {_checkpoint_dir(workdir)} "
                              f"(kept: {checkpointer.all_steps()})")
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {_checkpoint_dir(workdir)}")
  step, state = restored
  logging.info("restored parameters of step %d from %s", step, _checkpoint_dir(workdir))
  return state.eval_variables(objective)


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of the finished checkpoints in workdir, ascending (orbax renames a
  step's folder to its number only when the write is complete)."""
  directory = _checkpoint_dir(workdir)
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(name) for name in names if name.isdigit())


def has_checkpoint(workdir: str) -> bool:
  """True when workdir holds a finished checkpoint step, readable or set aside as corrupt
  (`<step>.corrupt-<time>`); orbax's temporaries of an interrupted first save do not count."""
  directory = _checkpoint_dir(workdir)
  return os.path.isdir(directory) and any(
      name.isdigit() or (name.split(".")[0].isdigit() and ".corrupt-" in name)
      for name in os.listdir(directory))


def _checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def _unlogged_path(workdir: str) -> str:
  """Metrics of the steps after the last log line of a preempted run."""
  return os.path.join(workdir, "unlogged_train_metrics.npz")


def _examples(batch: Batch) -> int:
  """Global batch size: axis 0 of the arrays other than the shard-major packed_* ones."""
  return next(a.shape[0] for name, a in batch.items()
              if not name.startswith(mesh_lib.SHARD_MAJOR_PREFIX))


class _TrainLog:
  """Host copies of each step's metrics: checks the loss is finite and averages
  the metrics since the last log line. Fetching lags one step behind the
  dispatch so the device queue never runs dry."""

  def __init__(self, stop_on_nan: bool, last_checkpoint: int | None):
    self._stop_on_nan = stop_on_nan
    self.last_checkpoint = last_checkpoint
    self._in_flight: tuple[int, dict] | None = None
    self._since_log: list[dict] = []

  def push(self, step: int, metrics: dict) -> None:
    """Records metrics (device arrays) of `step`; fetches the previous step's."""
    self.flush()
    self._in_flight = (step, metrics)

  def flush(self) -> None:
    """Fetches the pending step's metrics; raises FloatingPointError if non-finite."""
    if self._in_flight is None:
      return
    step, metrics = self._in_flight
    self._in_flight = None
    values = jax.device_get(metrics)
    if self._stop_on_nan and not (np.isfinite(values["loss"]) and
                                  np.isfinite(values["grad_norm"])):
      kept = ("no checkpoint was written" if self.last_checkpoint is None else
              f"the last checkpoint (step {self.last_checkpoint}) is kept")
      raise FloatingPointError(
          f"non-finite training loss {values['loss']} (gradient norm "
          f"{values['grad_norm']}) at step {step}; stopped, {kept}.")
    self._since_log.append(values)

  def mean_since_last(self) -> dict[str, float]:
    """Mean of each metric over the steps since the previous call."""
    self.flush()
    means = jax.tree.map(lambda *xs: float(np.mean(xs)), *self._since_log)
    self._since_log = []
    return means

  def save_unlogged(self, path: str, step: int) -> None:
    """Writes the metrics of the steps not yet in a log line (a stop between two
    log lines) to `path`, so that the run resumed at `step` logs the same means."""
    self.flush()
    if os.path.exists(path):
      os.remove(path)
    if self._since_log and jax.process_index() == 0:
      columns = jax.tree.map(lambda *xs: np.stack(xs), *self._since_log)
      np.savez(path + ".tmp.npz", step=step, **columns)
      os.replace(path + ".tmp.npz", path)

  def load_unlogged(self, path: str, step: int) -> None:
    """Takes back what `save_unlogged` wrote at `step`; a file of another step is
    stale (the run went on, or resumed from an older checkpoint) and ignored."""
    if not os.path.exists(path):
      return
    with np.load(path) as saved:
      if int(saved["step"]) == step:
        columns = {name: saved[name] for name in saved.files if name != "step"}
        count = len(next(iter(columns.values())))
        self._since_log = [{name: column[i] for name, column in columns.items()}
                           for i in range(count)]


def _several_processes() -> bool:
  """Whether the processes must agree on when to stop (a function, for tests)."""
  return jax.process_count() > 1


def _next_global(train_iter: Iterator[Batch], mesh: Mesh, step: int) -> Batch:
  try:
    return mesh_lib.to_global(next(train_iter), mesh)
  except StopIteration:
    raise ValueError(f"the train iterator ran out of batches at step {step}; "
                     "repeat the dataset") from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       objective: Objective, train_iter: Iterator[Batch],
                       make_eval_iter: Callable[[], Iterable[Batch]] | None,
                       mesh: Mesh | None = None,
                       custom_eval: Callable[[Any], dict[str, float]] | None = None,
                       on_eval: Callable[[int, dict[str, float], Any], None] | None = None,
                       ) -> dict[str, float]:
  """Trains config.train.num_steps steps, resuming from the latest checkpoint in
  workdir, evaluating every eval_every steps and at the end.

  custom_eval, where given, replaces the summed evaluation: it takes what
  objective.evaluate would (params, or (params, model_state)) and returns
  scalar metrics computed any way it likes (retrieval mAP over a whole test
  set, say); they are logged like the summed ones. on_eval(step, metrics,
  variables), where given, is called after each eval is logged (to keep the
  best step's parameters, say).

  train_iter yields host-local batches (dicts of numpy arrays, axis 0 this
  process's part of the global batch); a grain iterator's position is
  checkpointed with the state (an iterator with a true `position_free`
  attribute yields the same batches wherever it resumes: nothing to save).
  Returns the final eval metrics ({} without make_eval_iter). Stops with
  FloatingPointError on a non-finite loss when config.train.stop_on_nan,
  keeping the last checkpoint.

  On SIGTERM or SIGINT (preemption, Ctrl-C) it finishes the step in progress,
  writes a checkpoint of it, waits for the write and raises `Preempted`
  (sketchjax.main exits with status 75); all processes stop after the same
  step. Called again, it resumes from there and ends with the numbers of an
  uninterrupted run.
  """
  mesh = mesh or mesh_lib.make_mesh(config.mesh.fsdp)
  logging.info("mesh %s", dict(mesh.shape))
  checkpointer = checkpoint_lib.Checkpointer(_checkpoint_dir(workdir),
                                             config.train.keep_checkpoints)
  writer = metrics_lib.MetricWriter(workdir)
  try:
    with jax.set_mesh(mesh), preemption.StopSignals() as stop_signals:
      return _train_loop(config, workdir, objective, train_iter, make_eval_iter, mesh,
                         checkpointer, writer, custom_eval, stop_signals, on_eval)
  finally:
    checkpointer.wait()  # Even on errors: the last checkpoint is finished, never torn.
    checkpointer.close()
    writer.close()


def _train_loop(config: ml_collections.ConfigDict, workdir: str, objective: Objective,
                train_iter: Iterator[Batch],
                make_eval_iter: Callable[[], Iterable[Batch]] | None, mesh: Mesh,
                checkpointer: checkpoint_lib.Checkpointer,
                writer: metrics_lib.MetricWriter,
                custom_eval: Callable[[Any], dict[str, float]] | None,
                stop_signals: preemption.StopSignals,
                on_eval: Callable[[int, dict[str, float], Any], None] | None = None,
                ) -> dict[str, float]:
  """train_and_evaluate inside the mesh context, with its checkpointer, writer
  and signal handlers."""
  train = config.train
  data_iterator = train_iter if checkpoint_lib.is_checkpointable_iterator(train_iter) else None
  if data_iterator is None and not getattr(train_iter, "position_free", False):
    logging.warning("train_iter (%s) is not a grain iterator: its position is not "
                    "checkpointed, so a resumed run sees different data",
                    type(train_iter).__name__)
  tx = objective.make_optimizer(config)
  constants = jax.device_put(objective.constants, mesh_lib.replicated(mesh))
  schedule = optim.make_schedule(config.optimizer, train.num_steps)

  first_batch = _next_global(train_iter, mesh, step=0)
  init, abstract, shardings = _abstract_state(objective, tx, first_batch, config.seed, mesh)
  restored = checkpointer.restore_latest(abstract, data_iterator, set_aside_unreadable=True)
  if restored is None:
    latest = None
    state = jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed), first_batch)
    pending = first_batch
  else:
    latest, state = restored
    pending = None if data_iterator is not None else first_batch
    logging.info("resumed from the checkpoint of step %d in %s", latest,
                 _checkpoint_dir(workdir))
  train_step = _make_train_step(objective, tx, schedule, shardings, mesh,
                                config.train.get("microbatches", 1))

  def run_eval(step: int) -> dict[str, float]:
    variables = state.eval_variables(objective)
    result = (custom_eval(variables) if custom_eval is not None else
              evaluate(config, variables, objective, make_eval_iter(), mesh))
    writer.write(step, "eval", result)
    logging.info("eval at step %d: %s", step, result)
    if on_eval is not None:
      on_eval(step, result, variables)
    return result

  def eval_due(step: int) -> bool:
    has_eval = make_eval_iter is not None or custom_eval is not None
    return has_eval and (step % train.eval_every == 0 or step >= train.num_steps)

  step = int(jax.device_get(state.step))
  log = _TrainLog(train.stop_on_nan, latest)
  progress = progress_lib.Progress(train.num_steps, step)
  eval_metrics = {}
  if latest is not None:
    log.load_unlogged(_unlogged_path(workdir), step)
    # A killed run may have logged past its last checkpoint, or died before the
    # eval of this step: forget those rows and redo the eval (deterministic).
    writer.rewind(step, redone_splits=("eval",) if eval_due(step) else ())
    if eval_due(step):
      eval_metrics = run_eval(step)
  while step < train.num_steps:
    batch = pending if pending is not None else _next_global(train_iter, mesh, step)
    pending = None
    with jax.transfer_guard("disallow"):
      state, metrics = train_step(state, batch, constants)
    step += 1
    log.push(step, metrics)
    if step % train.log_every == 0 or step == train.num_steps:
      means = log.mean_since_last()
      steps_per_sec, examples_per_sec = progress.update(step, means["loss"], _examples(batch))
      writer.write(step, "train", {**means, "steps_per_sec": steps_per_sec,
                                   "examples_per_sec": examples_per_sec})
    # Several processes stop after the same step, if any of them was asked to.
    stopping = (preemption.on_any_process(stop_signals.requested) if _several_processes()
                else stop_signals.requested)
    stopping = stopping and step < train.num_steps
    if step % train.checkpoint_every == 0 or step == train.num_steps or stopping:
      log.flush()  # Never save a state that followed a non-finite loss.
      checkpointer.save(step, state, data_iterator)
      log.last_checkpoint = step
    if stopping:  # The eval due at this step, if any, is redone on resuming.
      log.save_unlogged(_unlogged_path(workdir), step)
      checkpointer.wait()
      preempted = Preempted(step, train.num_steps, stop_signals.signal_name or
                            "a stop signal on another process", checkpointer.directory)
      logging.warning("preempted: %s", preempted)
      raise preempted
    if eval_due(step):
      eval_metrics = run_eval(step)
  return eval_metrics
