"""Rows scaled to unit length in JAX (torch's F.normalize), shared by the retrieval and
attack methods; `retrieval_metrics.l2_normalize` is the NumPy one for host-side scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def unit(x: jax.Array) -> jax.Array:
  """Rows [..., D] over max(L2 norm, 1e-12), in float32 (zero rows stay zero)."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
