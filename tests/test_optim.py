"""Learning-rate schedules and the AdamW optimiser."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.training import optim
from sketchjax.training import trainer


def _lr(k: int) -> float:
  """Hand-worked SketchXAINet rate at scheduler step k (= iteration // 2000)."""
  return 3e-4 * 0.5 * (1 + math.cos(math.pi * (k % 20) / 20))


@pytest.mark.parametrize("step, expected", [
    (0, 3e-4), (1999, 3e-4), (2000, _lr(1)), (20000, 1.5e-4), (39999, _lr(19)),
    (40000, 3e-4), (42000, _lr(1))])
def test_sketchxai_schedule(step, expected):
  schedule = optim.sketchxai_schedule()
  np.testing.assert_allclose(schedule(step), expected, rtol=1e-5)  # float32


def _config(**overrides):
  config = trainer.default_config().optimizer
  config.update(overrides)
  return config


def test_cosine_and_constant_with_warmup():
  cosine = optim.make_schedule(_config(schedule="cosine", learning_rate=1.0), 100)
  np.testing.assert_allclose([cosine(0), cosine(50), cosine(100)], [1.0, 0.5, 0.0], atol=1e-6)
  warm = optim.make_schedule(_config(schedule="constant", learning_rate=2.0, warmup_steps=4),
                             100)
  np.testing.assert_allclose([warm(0), warm(2), warm(4), warm(50)], [0.0, 1.0, 2.0, 2.0])


def test_unknown_schedule_and_optimizer_are_rejected():
  with pytest.raises(ValueError, match="schedule='step'"):
    optim.make_schedule(_config(schedule="step"), 10)
  with pytest.raises(ValueError, match="name='sgd'"):
    optim.make_optimizer(_config(name="sgd"), 10)


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_weight_decay_applies_to_every_parameter(clip):
  config = _config(schedule="constant", learning_rate=0.1, weight_decay=0.5,
                   grad_clip_norm=clip)
  tx = optim.make_optimizer(config, 10)
  params = {"kernel": jnp.ones((2, 3)), "bias": jnp.full((3,), 2.0)}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  jax.tree.map(lambda u, p: np.testing.assert_allclose(u, -0.1 * 0.5 * p), updates, params)
