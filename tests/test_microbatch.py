"""Gradient accumulation: same loss and gradients as one pass, shards kept apart."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.training import microbatch


def test_split_takes_each_shards_chunk_and_keeps_packed_arrays_aligned():
  batch = {"x": np.arange(8), "packed_rows": np.arange(4) * 10}  # B = 8, D = 2, M = 2
  micro = microbatch.split(batch, num_microbatches=2, num_shards=2)
  # Shard 0 holds sketches 0-3 (chunks 0-1, 2-3), shard 1 sketches 4-7.
  np.testing.assert_array_equal(micro["x"], [[0, 1, 4, 5], [2, 3, 6, 7]])
  # Packed chunk (d, m) is row d * M + m.
  np.testing.assert_array_equal(micro["packed_rows"], [[0, 20], [10, 30]])
  with pytest.raises(ValueError, match="micro-batches"):
    microbatch.split({"x": np.arange(6)}, num_microbatches=4, num_shards=1)


def _loss(params, batch, rng):
  del rng
  pred = batch["x"] @ params["w"] + batch["packed_bias"].sum()
  loss = jnp.mean((pred - batch["y"]) ** 2)
  return loss, {"mean_pred": pred.mean()}


@pytest.mark.parametrize("unroll", [False, True])
def test_accumulated_gradients_equal_one_pass(unroll):
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
  batch = {"x": rng.normal(size=(8, 3)).astype(np.float32),
           "y": rng.normal(size=(8,)).astype(np.float32),
           "packed_bias": np.zeros((4, 2), np.float32)}
  key = jax.random.key(0)
  (loss1, aux1), g1 = microbatch.value_and_grad(_loss, params, batch, key,
                                                num_microbatches=1, num_shards=2)
  (loss4, aux4), g4 = jax.jit(lambda p, b: microbatch.value_and_grad(
      _loss, p, b, key, num_microbatches=2, num_shards=2, unroll=unroll))(params, batch)
  np.testing.assert_allclose(loss4, loss1, rtol=1e-6)
  np.testing.assert_allclose(aux4["mean_pred"], aux1["mean_pred"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g4["w"], g1["w"], rtol=1e-5)


def test_summed_and_concatenated_equal_one_pass():
  batch = {"x": np.arange(24, dtype=np.float32).reshape(12, 2),
           "packed_rows": np.arange(6, dtype=np.float32)}  # D = 2, M = 3
  sums = lambda b: {"total": b["x"].sum(), "rows": b["packed_rows"].sum()}
  got = microbatch.summed(sums, batch, num_microbatches=3, num_shards=2)
  np.testing.assert_allclose(got["total"], batch["x"].sum())
  np.testing.assert_allclose(got["rows"], batch["packed_rows"].sum())
  per_example = microbatch.concatenated(lambda b: b["x"] * 2, batch, num_microbatches=3,
                                        num_shards=2)
  np.testing.assert_array_equal(per_example, batch["x"] * 2)
