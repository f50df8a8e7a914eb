"""Mesh construction, state shardings and host batches to global arrays."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from sketchjax.training import mesh as mesh_lib


def test_make_mesh_axes():
  assert dict(mesh_lib.make_mesh().shape) == {"data": 8}
  assert dict(mesh_lib.make_mesh(fsdp=2).shape) == {"data": 4, "fsdp": 2}
  assert dict(mesh_lib.make_mesh(devices=jax.devices()[:1]).shape) == {"data": 1}
  with pytest.raises(ValueError, match="fsdp=3"):
    mesh_lib.make_mesh(fsdp=3)


def test_state_shardings():
  shapes = {"w": jax.ShapeDtypeStruct((8, 3), jnp.float32),
            "v": jax.ShapeDtypeStruct((4, 16), jnp.float32),
            "odd": jax.ShapeDtypeStruct((3, 5), jnp.float32),
            "scalar": jax.ShapeDtypeStruct((), jnp.int32)}
  replicated = mesh_lib.state_shardings(shapes, mesh_lib.make_mesh())
  assert all(s.spec == P() for s in replicated.values())
  fsdp = mesh_lib.state_shardings(shapes, mesh_lib.make_mesh(fsdp=2))
  assert {k: s.spec for k, s in fsdp.items()} == {
      "w": P("fsdp", None), "v": P(None, "fsdp"), "odd": P(), "scalar": P()}


def test_pad_to_shapes_fills_packed_index_out_of_range():
  batch = {"points": np.ones((4, 2, 3), np.float32),
           "packed_index": np.array([[[0, 0], [1, 0]], [[0, 1], [2, 2]]], np.int32)}
  padded = mesh_lib.pad_to_shapes(batch, {"points": (4, 3, 5), "packed_index": (2, 4, 2)})
  assert padded["points"].shape == (4, 3, 5)
  assert padded["points"].sum() == 24 and padded["points"][:, 2:].sum() == 0
  # Local batch 4 over 2 shards: out-of-range sketch index 2.
  np.testing.assert_array_equal(padded["packed_index"][0], [[0, 0], [1, 0], [2, 0], [2, 0]])
  np.testing.assert_array_equal(padded["packed_index"][1], [[0, 1], [2, 2], [2, 0], [2, 0]])
  with pytest.raises(ValueError, match="'points'"):
    mesh_lib.pad_to_shapes(batch, {"points": (5, 2, 3), "packed_index": (2, 2, 2)})


def test_to_global_shards_axis_zero():
  mesh = mesh_lib.make_mesh(fsdp=2)
  batch = {"x": np.arange(32, dtype=np.float32).reshape(16, 2),
           "packed_index": np.zeros((8, 6, 2), np.int32)}
  out = mesh_lib.to_global(batch, mesh)
  assert out["x"].shape == (16, 2) and out["packed_index"].shape == (8, 6, 2)
  assert out["x"].sharding.spec == P(("data", "fsdp"))
  assert {s.data.shape for s in out["x"].addressable_shards} == {(2, 2)}
  np.testing.assert_array_equal(out["x"], batch["x"])
  with pytest.raises(ValueError, match="num_shards = 8 x micro-batches"):
    mesh_lib.to_global({"packed_index": np.zeros((2, 6, 2), np.int32)}, mesh)


def test_shard_map_uses_the_mesh_context():
  mesh = mesh_lib.make_mesh()
  x = mesh_lib.to_global({"x": np.arange(8, dtype=np.float32)}, mesh)["x"]
  total = jax.shard_map(lambda v: jax.lax.psum(jnp.sum(v), "data"), in_specs=P("data"),
                        out_specs=P())
  with jax.set_mesh(mesh):
    assert float(jax.jit(total)(x)) == 28.0


_TWO_PROCESS_SCRIPT = textwrap.dedent("""
  import sys
  import jax
  import numpy as np
  jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                             process_id=int(sys.argv[2]))
  from sketchjax.training import mesh as mesh_lib
  pid = jax.process_index()
  points = np.full((8, 2 + pid, 3), pid + 1, np.float32)   # trailing dims differ
  packed = np.zeros((4, 2 + 2 * pid, 2), np.int32)           # N differs: 2 vs 4
  out = mesh_lib.to_global({"points": points, "packed_index": packed},
                           mesh_lib.make_mesh())
  assert out["points"].shape == (16, 3, 3), out["points"].shape
  assert out["packed_index"].shape == (8, 4, 2), out["packed_index"].shape
  for shard in out["packed_index"].addressable_shards:
    rows = np.asarray(shard.data)[0]
    expected = [[0, 0]] * (2 + 2 * pid) + [[2, 0]] * (2 - 2 * pid)
    assert (rows == np.array(expected)).all(), rows
  total = jax.jit(lambda p: p.sum(), out_shardings=mesh_lib.replicated(out["points"].sharding.mesh))
  assert float(total(out["points"])) == 8 * 2 * 3 * 1 + 8 * 3 * 3 * 2
  print("ok", pid)
""")


def test_to_global_pads_to_common_shapes_across_two_processes(tmp_path):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  port = 20000 + os.getpid() % 20000
  procs = [subprocess.Popen([sys.executable, "-c", _TWO_PROCESS_SCRIPT, f"127.0.0.1:{port}",
                             str(i)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0 and f"ok {i}" in out, out[-3000:]
