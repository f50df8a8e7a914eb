"""Asynchronous orbax checkpoints of the train state and the grain iterator position.

Each step directory holds the item "state" (any pytree of jax.Arrays, restored
with the shardings of an abstract target) and, when the data iterator is a
grain iterator, the item "data" (one JSON file per process). All processes
call `save` and `restore` collectively.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp

STATE, DATA = "state", "data"


def is_checkpointable_iterator(iterator: Any) -> bool:
  """Whether grain's orbax handler can save the iterator's position."""
  return isinstance(iterator, (grain.DatasetIterator, grain.DataLoaderIterator))


class Checkpointer:
  """Keeps the latest `keep` checkpoints under `directory`."""

  def __init__(self, directory: str, keep: int):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

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
    .sharding) and, when given, moves `data_iterator` to the saved position."""
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      if DATA not in self._manager.item_metadata(step):
        raise ValueError(f"checkpoint {self._manager.directory}/{step} has no data "
                         "iterator position (it was saved from a plain iterator)")
      items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))[STATE]

  def wait(self) -> None:
    """Blocks until the background writes are done."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
