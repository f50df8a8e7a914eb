"""Deletion / insertion curves and areas on an additive score with known stroke values."""

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.methods import faithfulness

VALUES = jnp.array([0.1, 0.5, 0.2, 0.0, 0.0])  # stroke worth; slots 3, 4 are empty
PRESENT = jnp.array([True, True, True, False, False])


def _score(keep):
  return jnp.sum(keep * VALUES)


def test_orders():
  np.testing.assert_array_equal(faithfulness.ranking(VALUES, PRESENT)[:3], [1, 2, 0])
  np.testing.assert_array_equal(faithfulness.drawing_order(PRESENT)[:3], [0, 1, 2])
  order = faithfulness.random_order(jax.random.key(0), PRESENT)
  assert sorted(np.asarray(order[:3]).tolist()) == [0, 1, 2]
  assert sorted(np.asarray(order[3:]).tolist()) == [3, 4]


def test_curves_and_areas():
  order = faithfulness.ranking(VALUES, PRESENT)
  deletion, insertion = faithfulness.curves(_score, order, PRESENT)
  np.testing.assert_allclose(deletion, [0.8, 0.3, 0.1, 0.0, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(insertion, [0.0, 0.5, 0.7, 0.8, 0.8, 0.8], atol=1e-6)
  n = PRESENT.sum()
  np.testing.assert_allclose(faithfulness.area(deletion, n), (0.55 + 0.2 + 0.05) / 3, atol=1e-6)
  np.testing.assert_allclose(faithfulness.area(insertion, n), (0.25 + 0.6 + 0.75) / 3, atol=1e-6)
  # the true ranking deletes faster and inserts faster than the reverse drawing order
  worst = faithfulness.ranking(-VALUES, PRESENT)
  worst_deletion, worst_insertion = faithfulness.curves(_score, worst, PRESENT)
  assert faithfulness.area(deletion, n) < faithfulness.area(worst_deletion, n)
  assert faithfulness.area(insertion, n) > faithfulness.area(worst_insertion, n)
  assert float(faithfulness.area(deletion, 0)) == 0.0
