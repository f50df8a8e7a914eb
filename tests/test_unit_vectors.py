"""unit_vectors.unit: rows scaled to unit length, zero rows kept, float32."""

import jax.numpy as jnp
import numpy as np

from sketchjax.methods import unit_vectors


def test_rows_have_unit_length_and_keep_their_direction():
  x = jnp.asarray([[3.0, 4.0], [0.0, -2.0]], jnp.bfloat16)
  out = unit_vectors.unit(x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), [[0.6, 0.8], [0.0, -1.0]], rtol=1e-6)


def test_zero_rows_stay_zero_and_leading_axes_are_kept():
  x = jnp.zeros((2, 3, 4)).at[0, 1].set(jnp.arange(4.0))
  out = np.asarray(unit_vectors.unit(x))
  assert out.shape == (2, 3, 4)
  np.testing.assert_allclose(np.linalg.norm(out[0, 1]), 1.0, rtol=1e-6)
  assert not out[1].any() and np.isfinite(out).all()
