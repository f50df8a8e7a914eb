"""SBIR losses: hand-worked triplet values, InfoNCE against a numpy reference,
and the shard_map all-gather InfoNCE equal to the global one on 1 and 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.methods import sbir_losses
from sketchjax.training import mesh as mesh_lib


def _unit(rng, n, d):
  x = rng.normal(size=(n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_triplet_loss_hand_worked():
  # Sketch (0, 0); positive photo (3, 4) at distance 5; the only other class's
  # photo (0, 1) at distance 1: max(0, 5 - 1 + 1) = 5 for the first anchor.
  sketch = jnp.array([[0.0, 0.0], [0.0, 1.0]])
  photo = jnp.array([[3.0, 4.0], [0.0, 1.0]])
  labels = jnp.array([0, 1])
  # Second anchor: positive at 0, negative (3, 4) at sqrt(9 + 9) -> hinge 0.
  loss = sbir_losses.triplet_loss(sketch, photo, labels, jax.random.key(0), margin=1.0)
  eps = sbir_losses.TORCH_PAIRWISE_EPS
  d_pos = np.hypot(-3 + eps, -4 + eps)
  d_neg = np.hypot(0 + eps, -1 + eps)
  np.testing.assert_allclose(loss, (d_pos - d_neg + 1.0) / 2, rtol=1e-6)


def test_random_negatives_are_of_another_class():
  labels = jnp.array([0, 0, 1, 2, 2, 1, 0, 3])
  for seed in range(5):
    neg = sbir_losses.random_negatives(labels, jax.random.key(seed))
    assert np.all(np.asarray(labels)[np.asarray(neg)] != np.asarray(labels))
  single = sbir_losses.random_negatives(jnp.zeros(4, int), jax.random.key(0))
  np.testing.assert_array_equal(single, np.arange(4))


def _numpy_info_nce(s, p, t):
  logits = s @ p.T / t

  def ce(lg):
    lg = lg - lg.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(lg).sum(axis=1)) - np.diag(lg))

  return 0.5 * (ce(logits) + ce(logits.T))


def test_info_nce_matches_numpy():
  rng = np.random.default_rng(0)
  s, p = _unit(rng, 16, 8), _unit(rng, 16, 8)
  got = sbir_losses.info_nce_loss(jnp.asarray(s), jnp.asarray(p), 0.07)
  np.testing.assert_allclose(got, _numpy_info_nce(s.astype(np.float64), p.astype(np.float64),
                                                  0.07), rtol=1e-5)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_sharded_info_nce_equals_global(num_devices):
  rng = np.random.default_rng(1)
  s, p = jnp.asarray(_unit(rng, 32, 8)), jnp.asarray(_unit(rng, 32, 8))
  mesh = mesh_lib.make_mesh(devices=jax.devices()[:num_devices])
  sharding = mesh_lib.batch_sharding(mesh)
  s_sharded, p_sharded = jax.device_put(s, sharding), jax.device_put(p, sharding)

  def sharded(a, b):
    return sbir_losses.sharded_info_nce_loss(a, b, 0.1, mesh)

  want, want_grads = jax.value_and_grad(sbir_losses.info_nce_loss, argnums=(0, 1))(s, p, 0.1)
  got, got_grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(s_sharded, p_sharded)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
