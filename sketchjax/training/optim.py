"""Learning-rate schedules and the optimiser built from `config.optimizer`."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax


def sketchxai_schedule(base_lr: float = 3e-4, step_every: int = 2000,
                       period: int = 20) -> optax.Schedule:
  """SketchXAINet's schedule (spec A.2 training table, A.5).

  torch CosineAnnealingWarmRestarts(T_0=period, eta_min=0) stepped once every
  `step_every` iterations, so a step function of the iteration:

    lr(step) = base_lr * 0.5 * (1 + cos(pi * ((step // step_every) mod period) / period))

  so one cosine lasts step_every * period iterations (40k), then restarts.
  """

  def schedule(step):
    k = (jnp.asarray(step) // step_every) % period
    return base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * k / period))

  return schedule


def make_schedule(config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """config.schedule: "sketchxai" | "cosine" (to 0 at num_steps) | "constant";
  config.warmup_steps > 0 prepends a linear warm-up from 0 (the schedule then
  starts counting after it)."""
  lr, warmup = config.learning_rate, config.warmup_steps
  match config.schedule:
    case "sketchxai":
      main = sketchxai_schedule(lr, config.schedule_step_every, config.schedule_period)
    case "cosine":
      main = optax.cosine_decay_schedule(lr, max(num_steps - warmup, 1))
    case "constant":
      main = optax.constant_schedule(lr)
    case other:
      raise ValueError(f"config.optimizer.schedule={other!r}: expected 'sketchxai', "
                       "'cosine' or 'constant'")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(config: ml_collections.ConfigDict,
                   num_steps: int) -> optax.GradientTransformation:
  """AdamW with decoupled weight decay on every parameter (mask=None, as the
  official code), preceded by global-norm clipping when config.grad_clip_norm > 0."""
  if config.name != "adamw":
    raise ValueError(f"config.optimizer.name={config.name!r}: only 'adamw' is supported "
                     "(use weight_decay=0 for Adam)")
  adamw = optax.adamw(make_schedule(config, num_steps), b1=config.b1, b2=config.b2,
                      eps=config.eps, weight_decay=config.weight_decay, mask=None)
  if config.grad_clip_norm <= 0:
    return adamw
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adamw)
