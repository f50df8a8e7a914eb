"""Layer statistics of a frozen network and the feature-statistics loss of the
"meta-data" baseline of CrossX-DFL (spec 2.8).

DeepInversion (Yin et al. 2020) reconstructs inputs from a classifier's
BatchNorm layers: for every BN layer l, the per-channel mean and variance of
its input over the generated batch should match the layer's running
statistics. The paper's loss is sum_l ||mu_l - mu_l^run||_2 +
||var_l - var_l^run||_2; we use the squared distances (smooth at the match).

Our teachers are ImageNet MobileNetV2s with the BatchNorm folded into the
convolutions (the TFLite weights), so they have no running statistics. For such
a network the statistics are those of every convolution's output, and the
reference is what Lopes et al. (2017) call the teacher's meta-data: the same
statistics recorded once on its training images (`record` on real data) and
shipped with it. Which layers: the inputs of every `nn.BatchNorm` if the
network calls one, else the outputs of every `nn.Conv`, in call order.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class Statistics(NamedTuple):
  """Per-layer, per-channel statistics, in call order: means and variances,
  tuples of float32 [C_l]."""

  means: tuple[jax.Array, ...]
  variances: tuple[jax.Array, ...]


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and (biased) variance over every axis but the last (channels)."""
  axes = tuple(range(x.ndim - 1))
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axes)
  return mean, jnp.mean(jnp.square(x - mean), axes)


def record(fn: Callable[..., Any], *args, **kwargs
           ) -> tuple[Any, Statistics, Statistics | None]:
  """Runs `fn(*args, **kwargs)` (anything that applies flax modules) and returns
  (its output, the batch statistics of the recorded layers, their running
  statistics or None). With BatchNorm layers: the BN inputs' statistics and the
  layers' running mean / var ("batch_stats"); without: the `nn.Conv` outputs'
  statistics and None."""
  batch_norm: list[tuple] = []
  conv: list[tuple] = []

  def interceptor(next_fun, call_args, call_kwargs, context):
    if context.method_name != "__call__":
      return next_fun(*call_args, **call_kwargs)
    module = context.module
    if isinstance(module, nn.BatchNorm):
      batch_norm.append((*_moments(call_args[0]), module.get_variable("batch_stats", "mean"),
                         module.get_variable("batch_stats", "var")))
      return next_fun(*call_args, **call_kwargs)
    out = next_fun(*call_args, **call_kwargs)
    if isinstance(module, nn.Conv):
      conv.append(_moments(out))
    return out

  with nn.intercept_methods(interceptor):
    out = fn(*args, **kwargs)
  if batch_norm:
    means, variances, run_means, run_variances = zip(*batch_norm)
    return out, Statistics(means, variances), Statistics(run_means, run_variances)
  if not conv:
    raise ValueError("the network called neither nn.BatchNorm nor nn.Conv: no layer "
                     "statistics to record")
  means, variances = zip(*conv)
  return out, Statistics(means, variances), None


def statistics_loss(batch: Statistics, reference: Statistics) -> jax.Array:
  """sum_l ||mu_l - mu_l^ref||^2 + ||var_l - var_l^ref||^2 (a scalar)."""
  if len(batch.means) != len(reference.means):
    raise ValueError(f"{len(batch.means)} recorded layers against a reference of "
                     f"{len(reference.means)}")
  return sum(jnp.sum(jnp.square(m - r)) + jnp.sum(jnp.square(v - s))
             for m, v, r, s in zip(batch.means, batch.variances, reference.means,
                                   reference.variances))


def mean_statistics(all_batches: list[Statistics]) -> Statistics:
  """The reference of several batches of real images: per layer, the mean of
  the batch means and of the batch variances (equal-size batches)."""
  stack = lambda parts: tuple(jnp.mean(jnp.stack(p), 0) for p in zip(*parts))
  return Statistics(stack([s.means for s in all_batches]),
                    stack([s.variances for s in all_batches]))


def feature_statistics_loss(fn: Callable[..., Any], *args,
                            reference: Statistics | None = None, **kwargs) -> jax.Array:
  """The meta-data loss of the images in `args` under `fn`: against the BN
  layers' running statistics where the network has BN (DeepInversion), else
  against `reference` (recorded conv-output statistics); ValueError if neither."""
  _, batch, running = record(fn, *args, **kwargs)
  if running is None and reference is None:
    raise ValueError("this network has no BatchNorm running statistics: give the reference "
                     "statistics recorded on its training images")
  return statistics_loss(batch, running if running is not None else reference)
