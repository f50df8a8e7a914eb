"""Device mesh, shardings, and host-local batches to global arrays.

The mesh has a 'data' axis and, when FSDP is asked for, a second 'fsdp' axis.
The batch (axis 0 of every array) is split over all mesh devices, data and
fsdp axes alike; parameters and optimiser state are replicated, or with FSDP
each leaf is split along its largest dimension divisible by the fsdp size.

Axis types are Auto: XLA propagates shardings through model code written
without sharding annotations (Explicit axes, `jax.make_mesh`'s default, would
make every model annotate its reshapes and gathers of the batch axis).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
import numpy as np

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
PACKED_INDEX = "packed_index"
SHARD_MAJOR_PREFIX = "packed_"  # arrays [D, ...]: one entry per data shard


def make_mesh(fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh ('data',) over `devices` (default: all), or ('data', 'fsdp') when fsdp > 1."""
  devices = list(jax.devices() if devices is None else devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"config.mesh.fsdp={fsdp} must be >= 1 and divide the "
                     f"{len(devices)} devices")
  if fsdp == 1:
    return jax.make_mesh((len(devices),), (DATA_AXIS,), (AxisType.Auto,), devices=devices)
  return jax.make_mesh((len(devices) // fsdp, fsdp), (DATA_AXIS, FSDP_AXIS),
                       (AxisType.Auto, AxisType.Auto), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Axis 0 split over every mesh axis; other axes whole."""
  return NamedSharding(mesh, PartitionSpec(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def state_shardings(abstract_tree: Any, mesh: Mesh) -> Any:
  """NamedSharding per leaf of a pytree of shapes (e.g. from `jax.eval_shape`).

  Replicated without an 'fsdp' axis; with one, each leaf is split along its
  largest dimension divisible by the fsdp size (replicated when none is).
  """
  if FSDP_AXIS not in mesh.axis_names:
    return jax.tree.map(lambda _: replicated(mesh), abstract_tree)
  fsdp = mesh.shape[FSDP_AXIS]

  def leaf_sharding(leaf: jax.ShapeDtypeStruct) -> NamedSharding:
    divisible = [d for d, size in enumerate(leaf.shape) if size % fsdp == 0]
    if not divisible:
      return replicated(mesh)
    largest = max(divisible, key=lambda d: leaf.shape[d])
    spec = [None] * len(leaf.shape)
    spec[largest] = FSDP_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))

  return jax.tree.map(leaf_sharding, abstract_tree)


def local_batch_size(batch: Mapping[str, np.ndarray]) -> int:
  """Axis 0 of the arrays other than the shard-major `packed_*` ones ([shards, ...])."""
  sizes = {name: a.shape[0] for name, a in batch.items()
           if not name.startswith(SHARD_MAJOR_PREFIX)}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"batch arrays disagree on the batch size (axis 0): {sizes}")
  return next(iter(sizes.values()))


def pad_to_shapes(batch: Mapping[str, np.ndarray],
                  shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  """Pads every array's trailing axes at the end up to `shapes` (axis 0 must match).

  Padding is zero, except in `packed_index` [D, ..., 2] (sketch within shard,
  slot), whose new entries hold the out-of-range sketch index B / D in column 0
  and 0 in column 1, B being the local batch size.
  """
  padded = {}
  for name, array in batch.items():
    target = tuple(shapes[name])
    if array.shape[0] != target[0] or len(array.shape) != len(target):
      raise ValueError(f"batch array {name!r}: local shape {array.shape} cannot be "
                       f"padded to {target} (axis 0 and rank must agree across processes)")
    if name == PACKED_INDEX:
      padded[name] = np.zeros(target, array.dtype)
      padded[name][..., 0] = local_batch_size(batch) // array.shape[0]  # out of range
      padded[name][tuple(slice(0, s) for s in array.shape)] = array
    else:
      padded[name] = np.pad(array, [(0, t - s) for s, t in zip(array.shape, target)])
  return padded


def _agree_on_shapes(batch: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
  """Elementwise maximum of every array's shape over all processes."""
  names = sorted(batch)
  flat = np.array([size for name in names for size in batch[name].shape], np.int64)
  maxima = np.asarray(multihost_utils.process_allgather(flat)).max(axis=0)
  shapes, start = {}, 0
  for name in names:
    rank = batch[name].ndim
    shapes[name] = tuple(int(s) for s in maxima[start:start + rank])
    start += rank
  return shapes


def _check_packed_index(batch: Mapping[str, np.ndarray], mesh: Mesh) -> None:
  if PACKED_INDEX not in batch:
    return
  shards, local_devices = batch[PACKED_INDEX].shape[0], len(mesh.local_devices)
  if shards % local_devices:
    raise ValueError(f"packed_index has {shards} shards but the mesh splits this "
                     f"process's batch over {local_devices} devices: tokenise with "
                     f"num_shards = {local_devices} x micro-batches")


def to_global(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local batch (numpy arrays, axis 0 = this process's part) -> global jax.Arrays.

  With several processes the local arrays are first padded to the largest
  shape any process has (bucketed shapes may differ); see `pad_to_shapes`.
  """
  local = {name: np.asarray(a) for name, a in batch.items()}
  _check_packed_index(local, mesh)
  if jax.process_count() > 1:
    local = pad_to_shapes(local, _agree_on_shapes(local))
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, a)
          for name, a in local.items()}
