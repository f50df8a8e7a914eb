"""Asynchronous orbax checkpoints of the train state and the grain iterator position.

Each step directory holds the item "state" (a pytree of jax.Arrays with a
`params` field, restored with the shardings of an abstract target) and, when
the data iterator is a grain iterator, the item "data" (one JSON file per
process). All processes call `save` and `restore_latest` collectively.

A checkpoint that does not restore (truncated or missing files) is skipped
with a warning for the previous one (and, when training, moved aside to
`<step>.corrupt-<time>`); one holding parameters of other shapes stops the run
with a clear error.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

STATE, DATA = "state", "data"
PARAMS = "params"  # the field of the state compared with a checkpoint's shapes


class CheckpointError(RuntimeError):
  """Checkpoints exist but none can be restored."""


class CheckpointMismatchError(CheckpointError):
  """A checkpoint holds parameters of other shapes than the model of the config."""


def is_checkpointable_iterator(iterator: Any) -> bool:
  """Whether grain's orbax handler can save the iterator's position."""
  return isinstance(iterator, (grain.DatasetIterator, grain.DataLoaderIterator))


class Checkpointer:
  """Keeps the latest `keep` checkpoints under `directory`."""

  def __init__(self, directory: str, keep: int):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True),
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain.checkpoint.CheckpointHandler()})

  @property
  def directory(self) -> str:
    return str(self._manager.directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of the kept checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any | None) -> None:
    """Starts writing `state` (and the iterator position, when given) in the background.

    The iterator's position is read now, before this returns.
    """
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any, data_iterator: Any | None) -> Any:
    """Restores the state onto the shardings of `abstract_state` (ShapeDtypeStructs with
    .sharding) and, when given, moves `data_iterator` to the saved position.

    Raises CheckpointMismatchError when the checkpoint's `params` differ in
    structure or shape from those of `abstract_state`.
    """
    self._check_param_shapes(step, abstract_state)
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      if not os.path.isdir(os.path.join(self.directory, str(step), DATA)):
        raise ValueError(f"checkpoint {self.directory}/{step} has no data "
                         "iterator position (it was saved from a plain iterator)")
      items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))[STATE]

  def restore_latest(self, abstract_state: Any, data_iterator: Any | None, *,
                     set_aside_unreadable: bool) -> tuple[int, Any] | None:
    """(step, state) of the newest checkpoint that restores; None when there is none.

    Unreadable checkpoints are skipped with a WARNING naming the bad step and
    the step used; with `set_aside_unreadable` (training, which will write
    those steps again) they are moved aside. Raises CheckpointError when
    checkpoints exist but none restores, and CheckpointMismatchError (at once)
    for parameters of other shapes.
    """
    failures = {}
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state, error = self.restore(step, abstract_state, data_iterator), None
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (any unreadable file)
        state, error = None, e
      if _on_every_process(error is None):
        if failures:
          moved = (f", now moved aside to {self._set_aside(failures)}"
                   if set_aside_unreadable else "")
          logging.warning("using the checkpoint of step %d instead of the unreadable step(s) "
                          "%s%s", step, list(failures), moved)
        return step, state
      failures[step] = _one_line(error) if error else "unreadable on another process"
      logging.warning("the checkpoint of step %d in %s is unreadable (%s); trying the "
                      "previous one", step, self.directory, failures[step])
    if failures:
      reasons = "; ".join(f"step {step}: {reason}" for step, reason in failures.items())
      raise CheckpointError(
          f"no checkpoint in {self.directory} can be restored ({reasons}); nothing was "
          "changed: repair or remove that folder, or train in a new --workdir")
    return None

  def _check_param_shapes(self, step: int, abstract_state: Any) -> None:
    """Raises CheckpointMismatchError if the stored params differ from the target's."""
    stored = _shapes(self._manager.item_metadata(step)[STATE][PARAMS])
    wanted = _shapes(getattr(abstract_state, PARAMS))
    differences = [f"{name} is {stored[name]} there, {wanted[name]} here"
                   for name in wanted if name in stored and stored[name] != wanted[name]]
    differences += [f"{name} is missing there" for name in wanted if name not in stored]
    differences += [f"{name} is not in this model" for name in stored if name not in wanted]
    if differences:
      more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
      raise CheckpointMismatchError(
          f"the checkpoint of step {step} in {self.directory} was written by a model of "
          f"another shape than this config's: {'; '.join(differences[:3])}{more}. "
          "Use the config it was trained with, or a new --workdir")

  def _set_aside(self, steps: dict[int, str]) -> list[str]:
    """Renames the step directories to `<step>.corrupt-<time>` (process 0); their new paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = [os.path.join(self.directory, f"{step}.corrupt-{stamp}") for step in steps]
    if jax.process_index() == 0:
      for step, target in zip(steps, moved):
        os.rename(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("sketchjax_checkpoints_set_aside")
    self._manager.reload()
    return moved

  def wait(self) -> None:
    """Blocks until the background writes are done."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{"a/b/kernel": shape} of the arrays (or array metadata) of a pytree."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
          for path, leaf in leaves}


def _on_every_process(ok: bool) -> bool:
  """Whether `ok` holds on every process (collective on multi-process runs)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _one_line(error: BaseException) -> str:
  """`Type: first line of the message` of the root cause, at most 200 characters."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}"
  return text if len(text) <= 200 else text[:197] + "..."
