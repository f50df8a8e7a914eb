"""Every stroke attack and the noisy-stroke filter on one sketch of SketchXAINet (a vector model).

The raster attacks (sketchjax/methods/raster_attack.py) draw the sketch with the soft
rasteriser; SketchXAINet reads the coordinates themselves, so here every attacked sketch
goes through `vector_tokens.tokens` (normalisation and tokenisation inside JAX): a removal
gives exactly the model's input for the drawing without the removed ink (renormalised to
the kept points' bounding box, later strokes moved up into the freed slots), and PGD
moves the points in canvas units through the normalisation. A removal that would leave a
single point (a drawing the host normalisation refuses) is scored as the unchanged sketch,
so it never counts as a flip. `attack_sketch` runs
  strokes    `removal_attack` of whole strokes in VECTOR_STROKE_ORDERS: SLA (IG over
             the stroke gates of `attribution.gated_logits`, as the attribution task),
             SLA per unit of ink, occlusion (the exact score drop of deleting each
             stroke), random, drawing order, shortest first;
  segments   partial strokes, in VECTOR_SEGMENT_ORDERS (ours, not the paper's: P-SLA
             is defined for raster models). Removing a segment in the middle of a
             stroke would split it into two strokes, i.e. two tokens with new shape,
             location and order embeddings: not a partial removal for this model. So
             strokes are cut from their end: removing segment g of a stroke removes
             its points g + 1, ... (segment 0 removes the stroke). Segments are ranked
             by `segment_gate_ig` (IG over per-segment gates scaling each (dx, dy) row
             of the BiLSTM input, from every stroke collapsed to its start point to
             the sketch), summed over the tail each cut removes, by the same per unit
             of ink, at random, or cutting strokes in drawing order (`tail_order`);
  pgd        `pgd_points` at every radius (canvas units), and random displacement;
  filter     the noisy-stroke filters of sketchjax/methods/noisy_strokes.py.
A pure function of one sketch: `vmap` / `lax.map` it over a batch.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sketchjax.data import soft_rasterize as sr
from sketchjax.data import vector_tokens
from sketchjax.methods import attribution, faithfulness, noisy_strokes, stroke_attack
from sketchjax.methods.raster_attack import AttackSettings

VECTOR_STROKE_ORDERS = ("sla", "sla_per_ink", "occlusion", "random", "drawing_order",
                        "shortest")
VECTOR_SEGMENT_ORDERS = ("segment_ig", "segment_ig_per_ink", "random", "drawing_order")


def model_logits(model: nn.Module, params: Any):
  """One tokenised sketch (points [S, P, 4], stroke_len [S], loc [S, 2]) -> logits float[C]."""
  def logits(sketch: Mapping[str, jax.Array]) -> jax.Array:
    batch = {k: sketch[k][None] for k in ("points", "stroke_len", "loc")}
    return model.apply({"params": params}, batch, train=False, logits_only=True)[0][0]
  return logits


def segment_grid(lens: jax.Array, num_points: int) -> jax.Array:
  """bool[S, P - 1]: segment g of stroke k joins its points g and g + 1; a one-point stroke
  has one (zero-length) segment, as `sr.polyline_segments` counts them."""
  g = jnp.arange(num_points - 1)[None, :]
  return (g < jnp.maximum(lens[:, None] - 1, 1)) & (lens[:, None] > 0)


def pack_index(valid: jax.Array, num_segments: int) -> tuple[jax.Array, jax.Array]:
  """(index int[N] into the flattened grid, in_range bool[N]): the valid grid cells packed
  first, in `sr.polyline_segments`' order."""
  (index,) = jnp.nonzero(valid.reshape(-1), size=num_segments, fill_value=0)
  return index, jnp.arange(num_segments) < valid.sum()


def kept_points(keep: jax.Array, index: jax.Array, in_range: jax.Array, lens: jax.Array,
                num_points: int) -> jax.Array:
  """int32[S] points each stroke keeps when the packed segments with keep float[N] <= 0.5
  are removed: a stroke is cut at its first removed segment (segment 0 removed: the
  stroke goes)."""
  slots, cells = lens.shape[0], lens.shape[0] * (num_points - 1)
  grid = jnp.zeros(cells).at[jnp.where(in_range, index, cells)].set(
      (keep > 0.5).astype(jnp.float32), mode="drop").reshape(slots, num_points - 1)
  segments = jnp.cumprod(grid, axis=1).sum(1).astype(jnp.int32)  # leading kept segments
  return jnp.where(segments > 0, jnp.minimum(segments + 1, lens), 0).astype(jnp.int32)


def tail_order(cut_value: jax.Array, valid: jax.Array, index: jax.Array,
               in_range: jax.Array) -> jax.Array:
  """int32[N] removal order of the packed segments in which every prefix is a set of stroke
  tails: cuts are made by decreasing `cut_value` float[S, P - 1] (the value of cutting
  stroke k at segment g, i.e. removing g, g + 1, ...), each removing its tail's segments
  from the end of the stroke; a segment's priority is the best value of a cut that
  removes it (the running max along the stroke)."""
  priority = jax.lax.cummax(jnp.where(valid, cut_value, -jnp.inf), axis=1).reshape(-1)[index]
  g = index % cut_value.shape[1]
  return jnp.lexsort((-g, -priority, ~in_range)).astype(jnp.int32)


def tail_sums(values: jax.Array, valid: jax.Array) -> jax.Array:
  """float[S, G]: the sum of `values` float[S, G] over segments g, g + 1, ... of the stroke."""
  return jnp.cumsum(jnp.where(valid, values, 0.0)[:, ::-1], axis=1)[:, ::-1]


def segment_gate_ig(logits_of, sketch: Mapping[str, jax.Array], valid: jax.Array,
                    target: jax.Array, *, steps: int, chunk: int) -> jax.Array:
  """float32[S, P - 1]: IG of the target logit over per-segment gates that scale each
  segment's (dx, dy) row of the BiLSTM input, from all 0 (every stroke collapsed to its
  start point, locations kept) to 1 (the sketch). Ours: the vector analogue of P-SLA."""
  def score(gate):
    scaled = sketch["points"].at[:, 1:, :2].multiply(gate[..., None])
    return logits_of({**sketch, "points": scaled})[target]
  ones = valid.astype(jnp.float32)
  return attribution.integrated_gradients(score, ones, jnp.zeros_like(ones), steps=steps,
                                          chunk=chunk)


def attack_sketch(model: nn.Module, params: Any, xy: jax.Array, lens: jax.Array,
                  label: jax.Array, radii: jax.Array, key: jax.Array, attack: AttackSettings, *,
                  num_segments: int, dot_length: float) -> dict[str, jax.Array]:
  """All attacks on one sketch of SketchXAINet.

  Args:
    model, params: the classifier.
    xy: float[S, P, 2] polylines in canvas units (P >= 2); lens: int[S].
    label: int32, the sketch's class (the filter's target).
    radii: float[R] PGD displacement budgets, canvas units.
    key: for the random orders and displacements.
    attack: see AttackSettings.
    num_segments: N (`sr.count_segments`).
    dot_length: ink of a one-point stroke, canvas units.

  Returns:
    The keys of `raster_attack.attack_sketch`, over VECTOR_STROKE_ORDERS and
    VECTOR_SEGMENT_ORDERS, with segment_ig float32[N] in place of psla and
    pgd shifts in canvas units.
  """
  num_strokes, num_points = lens.shape[0], xy.shape[1]
  logits_of = model_logits(model, params)
  present = lens > 0
  sketch = vector_tokens.tokens(xy, lens)
  full_logits = logits_of(sketch)
  prediction = jnp.argmax(full_logits).astype(jnp.int32)

  def by_kept(kept):  # a removal that leaves a single point is no drawing: no flip
    reduced = vector_tokens.tokens(xy, lens, kept)
    return jnp.where(reduced["degenerate"], full_logits, logits_of(reduced))

  by_stroke = lambda keep: by_kept(jnp.where(keep > 0.5, lens, 0))

  sla = lambda target: attribution.vector_attributions(
      model, params, sketch, lambda logits: logits[target], steps=attack.ig_steps,
      chunk=attack.chunk)["gate_ig"]
  sla_prediction, sla_label = sla(prediction), sla(label)
  occlusion = attribution.occlusion(lambda keep: by_stroke(keep)[prediction], present)

  segments = sr.polyline_segments(xy, lens, num_segments)
  valid = segment_grid(lens, num_points)
  index, in_range = pack_index(valid, num_segments)
  by_segment = lambda keep: by_kept(kept_points(keep, index, in_range, lens, num_points))
  seg_ig = segment_gate_ig(logits_of, sketch, valid, prediction, steps=attack.ig_steps,
                           chunk=attack.chunk)
  segment_ink = stroke_attack.ink_lengths(segments, dot_length)
  grid_ink = jnp.zeros(valid.size).at[jnp.where(in_range, index, valid.size)].set(
      segment_ink, mode="drop").reshape(valid.shape)
  stroke_ink = jax.ops.segment_sum(segment_ink, segments.stroke, num_strokes)
  order_key, segment_key, random_key, filter_key = jax.random.split(key, 4)
  out = {"prediction": prediction, "sla": sla_prediction, "sla_label": sla_label,
         "occlusion": occlusion, "segment_ig": seg_ig.reshape(-1)[index] * in_range,
         "segment_stroke": jnp.where(segments.valid, segments.stroke, -1),
         "stroke_ink": stroke_ink}

  remove = lambda logits_of_keep, units, cost: jax.vmap(
      lambda order: stroke_attack.removal_attack(logits_of_keep, order, units, cost,
                                                 prediction, chunk=attack.chunk))
  stroke_orders = jnp.stack([
      faithfulness.ranking(sla_prediction, present),
      faithfulness.ranking(sla_prediction / jnp.maximum(stroke_ink, 1e-6), present),
      faithfulness.ranking(occlusion, present),
      faithfulness.random_order(order_key, present),
      faithfulness.drawing_order(present),
      stroke_attack.shortest_first(stroke_ink, present)])
  for name, value in remove(by_stroke, present, stroke_ink)(stroke_orders).items():
    out[f"strokes/{name}"] = value
  tail_ig = tail_sums(seg_ig, valid)
  cut_values = [tail_ig, tail_ig / jnp.maximum(tail_sums(grid_ink, valid), 1e-6),
                jax.random.uniform(segment_key, valid.shape),
                jnp.broadcast_to(-jnp.arange(num_strokes, dtype=jnp.float32)[:, None],
                                 valid.shape)]
  segment_orders = jnp.stack([tail_order(v, valid, index, in_range) for v in cut_values])
  for name, value in remove(by_segment, in_range, segment_ink)(segment_orders).items():
    out[f"segments/{name}"] = value
  touched = jax.vmap(lambda removed: jax.ops.segment_sum(
      removed.astype(jnp.int32), segments.stroke, num_strokes) > 0)(out["segments/removed_mask"])
  out["segments/strokes_touched"] = touched.sum(-1).astype(jnp.int32)

  out.update(stroke_attack.displacement_attacks(
      lambda moved: logits_of(vector_tokens.tokens(moved, lens)), xy, lens, radii, prediction,
      random_key, steps=attack.pgd_steps, step_fraction=attack.step_fraction))
  out.update(noisy_strokes.filter_results(by_stroke, sla_label, stroke_ink, present, label,
                                          filter_key))
  return out
