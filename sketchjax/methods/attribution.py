"""Stroke-level attribution (SLA), partial-stroke attribution (P-SLA) and their vector analogues.

Everything here explains one sketch with pure functions of a scalar score
(e.g. a class logit); callers `vmap` over sketches and `jit`.

Raster models (doodleNet, the raster CNN): the sketch is drawn by the soft
rasteriser (sketchjax/data/soft_rasterize.py) with an opacity per stroke or per
segment, and the model scores the image.
  SLA      integrated gradients (IG) over per-stroke opacities from the blank
           canvas (all 0) to the sketch (all 1), design spec B.3;
  P-SLA    the same over per-segment opacities, and the gradient of the score
           with respect to every point's coordinates (a heat along each stroke);
  plus gradient x input at opacity 1 and occlusion (score drop when one
  stroke is removed, all strokes at once with `vmap`).
IG satisfies completeness: the attributions sum to F(sketch) - F(blank), up to
the error of the m-step midpoint Riemann sum.

Vector models (SketchXAINet):
  occlusion     the score drop when one stroke is deleted; deletion removes
                the stroke and compacts the later ones into its slot
                (`delete_strokes`), so the model sees exactly the sketch drawn
                without that stroke (later strokes' order shifts, as it would).
                `packed_occlusion` scores only the real strokes of a whole
                batch, packed into one forward pass (`deletion_pairs`), instead
                of one pass per slot of every sketch (raster models too, with
                `hide_strokes`);
  gates         a gate g_k in [0, 1] per stroke scales the stroke's shape
                embedding and its location (the Dense(2, H) input), so g_k = 0
                makes slot k exactly an empty slot of the official (unmasked)
                model: the token is the location bias plus the order
                embedding. With `mask_padding=True` a gated-off slot is still
                attended (its token is not zeroed); occlusion is then the exact
                deletion. IG over the gates from all 0 (every slot empty) to
                all 1, and gradient x input at 1.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.models.bilstm import StrokeShapeEncoder

Score = Callable[[jax.Array], jax.Array]  # inputs -> scalar


def integrated_gradients(score: Score, x: jax.Array, baseline: jax.Array, *, steps: int = 32,
                         chunk: int | None = None) -> jax.Array:
  """IG of `score` along the straight path baseline -> x, midpoint rule with `steps` points.

  Returns attributions shaped like x; they sum to score(x) - score(baseline)
  up to the integration error. `chunk` bounds how many path points are
  differentiated at once (memory); default all of them (one vmap).
  """
  alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
  grad = jax.grad(score)
  path_grad = lambda t: grad(baseline + t * (x - baseline))
  grads = jax.lax.map(path_grad, alphas, batch_size=chunk or steps)
  return grads.mean(0) * (x - baseline)


def gradient_times_input(score: Score, x: jax.Array, baseline: jax.Array) -> jax.Array:
  """grad score(x) * (x - baseline): the first-order share of each input."""
  return jax.grad(score)(x) * (x - baseline)


def occlusion(score_keep: Score, present: jax.Array) -> jax.Array:
  """score(all present) - score(all present but stroke k), for every k at once (vmap).

  Args:
    score_keep: float[S] keep mask (1 = drawn) -> scalar.
    present: bool[S] real strokes; empty slots get 0.
  Returns:
    float32[S].
  """
  keep = present.astype(jnp.float32)
  full = score_keep(keep)
  without = jax.vmap(lambda k: score_keep(keep * (jnp.arange(keep.shape[0]) != k)))(
      jnp.arange(keep.shape[0]))
  return jnp.where(present, full - without, 0.0)


# --- raster models ------------------------------------------------------------------------


def stroke_score(image_score: Score, coverage: jax.Array) -> Score:
  """Per-stroke opacities float[S] -> score of the composite of `coverage` float[S, H, W]."""
  return lambda opacity: image_score(sr.composite(coverage, opacity))


def segment_score(image_score: Score, ink: sr.Ink, segments: sr.Segments, num_strokes: int,
                  settings: sr.RasterSettings) -> Score:
  """Per-segment opacities float[N] -> score of the sketch drawn with them."""
  def score(opacity):
    coverage = sr.stroke_coverage(ink, segments, num_strokes, settings, opacity)
    return image_score(sr.composite(coverage))
  return score


def raster_attributions(image_score: Score, xy: jax.Array, lens: jax.Array,
                        settings: sr.RasterSettings, *, num_segments: int,
                        num_pairs: int | None = None, steps: int = 32,
                        chunk: int | None = None) -> dict[str, jax.Array]:
  """All raster attributions of one sketch.

  Args:
    image_score: float32[size, size] ink image (1 = ink) -> scalar.
    xy: float[S, P, 2] pixel coordinates; lens: int[S].
    settings: the soft rasteriser's settings (the model's input size).
    num_segments: N, the flat segment rows (`sr.count_segments`).
    num_pairs: the (segment, tile) pair rows (`sr.tile_pair_budget`); default all.
    steps, chunk: IG path points, and how many are differentiated at once.

  Returns:
    sla_ig, sla_grad_x_input, occlusion: float32[S] (0 for empty slots);
    psla_ig: float32[N] per flat segment, segment_stroke int32[N] its stroke
      (-1 for padding); point_grad: float32[S, P] |d score / d point| in
      score units per pixel; score, blank_score: F(sketch) and F(blank).
  """
  num_strokes = lens.shape[0]
  present = lens > 0
  segments = sr.polyline_segments(xy, lens, num_segments)
  ink = jax.lax.stop_gradient(sr.segment_ink(segments, settings, num_pairs))
  coverage = sr.stroke_coverage(ink, segments, num_strokes, settings)
  by_stroke = stroke_score(image_score, coverage)
  ones, zeros = present.astype(jnp.float32), jnp.zeros(num_strokes)
  by_segment = segment_score(image_score, ink, segments, num_strokes, settings)
  seg_ones = segments.valid.astype(jnp.float32)
  point_grad = jax.grad(lambda p: image_score(sr.soft_rasterize(
      p, lens, settings, num_segments=num_segments, num_pairs=num_pairs)))(xy)
  return {
      "sla_ig": integrated_gradients(by_stroke, ones, zeros, steps=steps, chunk=chunk),
      "sla_grad_x_input": gradient_times_input(by_stroke, ones, zeros),
      "occlusion": occlusion(by_stroke, present),
      "psla_ig": integrated_gradients(by_segment, seg_ones, jnp.zeros_like(seg_ones),
                                      steps=steps, chunk=chunk),
      "segment_stroke": jnp.where(segments.valid, segments.stroke, -1),
      "point_grad": jnp.linalg.norm(point_grad, axis=-1),
      "score": by_stroke(ones),
      "blank_score": by_stroke(zeros),
  }


# --- vector models (SketchXAINet) ---------------------------------------------------------


def delete_strokes(sketch: Mapping[str, jax.Array], keep: jax.Array) -> dict[str, jax.Array]:
  """One tokenised sketch without the strokes where `keep` is False, the kept strokes moved
  up into consecutive slots in their drawing order (jittable).

  Args:
    sketch: points float[S, P, 4], stroke_len int[S], loc float[S, 2] (one
      sketch, no batch axis; other keys are dropped).
    keep: bool[S] (or float, > 0.5 kept).
  """
  keep = (keep > 0.5) & (sketch["stroke_len"] > 0)
  order = jnp.argsort(~keep, stable=True)  # kept slots first, in order
  filled = jnp.arange(keep.shape[0]) < keep.sum()
  return {
      "points": jnp.where(filled[:, None, None], sketch["points"][order], 0.0),
      "stroke_len": jnp.where(filled, sketch["stroke_len"][order], 0),
      "loc": jnp.where(filled[:, None], sketch["loc"][order], 0.0),
  }


def gated_logits(model: nn.Module, params: Any, sketch: Mapping[str, jax.Array],
                 gate: jax.Array) -> jax.Array:
  """SketchXAINet logits float32[C] of one sketch with per-stroke gates float[S] (see the
  module docstring): shape embedding and location of stroke k scaled by gate[k]."""
  batch = {"points": sketch["points"][None], "stroke_len": sketch["stroke_len"][None],
           "loc": (sketch["loc"] * gate[:, None])[None]}

  def scale_shape(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, StrokeShapeEncoder) and context.method_name == "__call__":
      return out * gate.reshape(-1, 1).astype(out.dtype)
    return out

  with nn.intercept_methods(scale_shape):
    logits, _ = model.apply({"params": params}, batch, train=False, logits_only=True)
  return logits[0]


def deletion_pairs(stroke_len: np.ndarray, multiple: int = 32) -> np.ndarray:
  """(sketch, stroke) of every real stroke of a batch (host side, for `packed_occlusion`).

  Args:
    stroke_len: int[B, S].
    multiple: the row count is padded up to a multiple of it (rows (0, -1),
      deleting nothing), so batches share a few compiled shapes.
  Returns:
    int32[K, 2].
  """
  pairs = np.argwhere(np.asarray(stroke_len) > 0).astype(np.int32)
  padded = -(-max(len(pairs), 1) // multiple) * multiple
  filler = np.tile(np.array([[0, -1]], np.int32), (padded - len(pairs), 1))
  return np.concatenate([pairs, filler])


def packed_occlusion(batch_logits: Callable[[Mapping[str, jax.Array]], jax.Array],
                     batch: Mapping[str, jax.Array], pairs: jax.Array, targets: jax.Array, *,
                     num_slots: int, delete: Callable[..., Mapping[str, jax.Array]] | None = None
                     ) -> jax.Array:
  """Occlusion of every real stroke of a batch, the deletions packed into one forward pass.

  Args:
    batch_logits: a batch (dict of arrays with a leading sketch axis) ->
      logits float[N, C].
    batch: B sketches, e.g. tokenised (points [B, S, P, 4], stroke_len [B, S],
      loc [B, S, 2]) or drawn ({"coverage": [B, S, H, W]}).
    pairs: int32[K, 2] (sketch, stroke) from `deletion_pairs`; stroke -1 = padding.
    targets: int32[B] the class scored, by its logit.
    num_slots: S.
    delete: (one sketch's dict, keep bool[S]) -> the sketch without the other
      strokes; default `delete_strokes` (tokenised sketches), `hide_strokes`
      for drawn ones.
  Returns:
    float32[B, S]: target logit of the sketch minus that of the sketch drawn
    without the stroke (0 for empty slots).
  """
  delete = delete or delete_strokes
  num_sketches = targets.shape[0]
  full = batch_logits(batch)[jnp.arange(num_sketches), targets]
  sketch, stroke = pairs[:, 0], pairs[:, 1]
  without = jax.vmap(lambda b, k: delete(
      jax.tree.map(lambda x: x[b], batch), jnp.arange(num_slots) != k))(sketch, stroke)
  dropped = full[sketch] - batch_logits(without)[jnp.arange(pairs.shape[0]), targets[sketch]]
  slot = jnp.where(stroke >= 0, stroke, num_slots)  # padding rows fall off the end
  return jnp.zeros((num_sketches, num_slots)).at[sketch, slot].set(dropped, mode="drop")


def hide_strokes(drawn: Mapping[str, jax.Array], keep: jax.Array) -> dict[str, jax.Array]:
  """A drawn sketch ({"coverage": float[S, H, W]}, `stroke_coverage`) with the strokes
  where `keep` is False made transparent."""
  return {"coverage": drawn["coverage"] * keep[:, None, None].astype(drawn["coverage"].dtype)}


def vector_attributions(model: nn.Module, params: Any, sketch: Mapping[str, jax.Array],
                        logit_score: Callable[[jax.Array], jax.Array], *, steps: int = 32,
                        chunk: int | None = None) -> dict[str, jax.Array]:
  """The gate attributions of one tokenised sketch for SketchXAINet (occlusion: see
  `packed_occlusion`, which batches it across sketches).

  Args:
    model, params: the classifier.
    sketch: points [S, P, 4], stroke_len [S], loc [S, 2] (no batch axis).
    logit_score: logits float[C] -> scalar (e.g. the target class's logit).
    steps, chunk: IG path points, and how many are differentiated at once.

  Returns:
    gate_ig, gate_grad_x_input: float32[S] (0 for empty slots);
    score: F(sketch); blank_score: F(all gates 0), the IG baseline.
  """
  present = sketch["stroke_len"] > 0
  by_gate = lambda g: logit_score(gated_logits(model, params, sketch, g))
  ones = present.astype(jnp.float32)
  zeros = jnp.zeros_like(ones)
  return {
      "gate_ig": jnp.where(present, integrated_gradients(by_gate, ones, zeros, steps=steps,
                                                         chunk=chunk), 0.0),
      "gate_grad_x_input": jnp.where(present, gradient_times_input(by_gate, ones, zeros), 0.0),
      "score": by_gate(ones),
      "blank_score": by_gate(zeros),
  }
