"""Every stroke attack and the noisy-stroke filter on one sketch of a raster classifier.

`attack_sketch` draws the sketch once with the soft rasteriser (per-stroke and
per-segment opacities, sketchjax/data/soft_rasterize.py), explains the
prediction (SLA, P-SLA: integrated gradients over the opacities,
sketchjax/methods/attribution.py) and the label (SLA), then runs
  strokes    `removal_attack` of whole strokes in the orders of STROKE_ORDERS;
  segments   `removal_attack` of segments (partial strokes) in SEGMENT_ORDERS;
             `*_per_ink` ranks by attribution over ink length (the most class per
             pixel of ink first), the others by attribution, at random, in drawing
             order or the shortest first;
  pgd        `pgd_points` at every displacement radius, and its random baseline;
  filter     the noisy-stroke filters of sketchjax/methods/noisy_strokes.py.
It is a pure function of one sketch: `vmap` / `lax.map` it over a batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from sketchjax.data import soft_rasterize as sr
from sketchjax.methods import attribution, faithfulness, noisy_strokes, stroke_attack

STROKE_ORDERS = ("sla", "sla_per_ink", "random", "drawing_order", "shortest")
SEGMENT_ORDERS = ("psla", "psla_per_ink", "random", "drawing_order")


@dataclasses.dataclass(frozen=True)
class AttackSettings:
  """ig_steps: IG path points; chunk: IG points / removal prefixes evaluated at once;
  pgd_steps: gradient steps of PGD (and random draws of its baseline); step_fraction:
  PGD's step as a share of the radius."""

  ig_steps: int = 32
  chunk: int = 8
  pgd_steps: int = 20
  step_fraction: float = 0.25

  def __post_init__(self):
    if min(self.ig_steps, self.chunk, self.pgd_steps) < 1 or self.step_fraction <= 0:
      raise ValueError(f"ig_steps, chunk and pgd_steps must be >= 1 and step_fraction > 0, "
                       f"got {self}")


def attack_sketch(image_logits: Callable[[jax.Array], jax.Array], xy: jax.Array,
                  lens: jax.Array, label: jax.Array, radii: jax.Array, key: jax.Array,
                  settings: sr.RasterSettings, attack: AttackSettings, *, num_segments: int,
                  num_pairs: int, pgd_pairs: int) -> dict[str, jax.Array]:
  """All attacks on one sketch.

  Args:
    image_logits: float32[size, size] ink image (1 = ink) -> logits float[C].
    xy: float[S, P, 2] pixel polylines; lens: int[S] (0 = empty slot).
    label: int32, the sketch's class (the filter's target).
    radii: float[R] PGD displacement budgets in pixels.
    key: for the random orders and displacements.
    settings: the soft rasteriser's (the model's input).
    attack: see AttackSettings.
    num_segments: N (`sr.count_segments`); num_pairs: (segment, tile) rows of the
      sketch (`sr.tile_pair_budget`); pgd_pairs: the same with every point moved
      by up to max(radii).

  Returns:
    prediction: int32; sla, sla_label: float32[S]; psla: float32[N];
    segment_stroke: int32[N] (-1 padding); stroke_ink: float32[S] pixels;
    strokes/{success, removed, cost_share, prediction}: [len(STROKE_ORDERS)],
      strokes/removed_mask: bool[O, S];
    segments/...: the same over SEGMENT_ORDERS and [O, N], plus
      segments/strokes_touched: int32[O];
    pgd/{success, prediction, mean_shift, max_shift, margin}: [R] (shifts in pixels),
      pgd/delta: float32[R, S, P, 2]; random/success: bool[R];
    filter/{correct, prediction}: [len(FILTERS)]; filter/dropped: int32;
      filter/keep: bool[F, S].
  """
  num_strokes = lens.shape[0]
  present = lens > 0
  segments = sr.polyline_segments(xy, lens, num_segments)
  ink = jax.lax.stop_gradient(sr.segment_ink(segments, settings, num_pairs))
  coverage = sr.stroke_coverage(ink, segments, num_strokes, settings)
  by_stroke = lambda keep: image_logits(sr.composite(coverage, keep))
  by_segment = lambda keep: image_logits(sr.composite(
      sr.stroke_coverage(ink, segments, num_strokes, settings, keep)))
  strokes_on, segments_on = present.astype(jnp.float32), segments.valid.astype(jnp.float32)
  prediction = jnp.argmax(by_stroke(strokes_on)).astype(jnp.int32)

  def ig(logits_of, ones, target):
    return attribution.integrated_gradients(lambda o: logits_of(o)[target], ones,
                                            jnp.zeros_like(ones), steps=attack.ig_steps,
                                            chunk=attack.chunk)

  sla, sla_label = ig(by_stroke, strokes_on, prediction), ig(by_stroke, strokes_on, label)
  psla = ig(by_segment, segments_on, prediction)
  segment_ink = stroke_attack.ink_lengths(segments, settings.line_width)
  stroke_ink = jax.ops.segment_sum(segment_ink, segments.stroke, num_strokes)
  order_key, segment_key, random_key, filter_key = jax.random.split(key, 4)
  out = {"prediction": prediction, "sla": sla, "sla_label": sla_label, "psla": psla,
         "segment_stroke": jnp.where(segments.valid, segments.stroke, -1),
         "stroke_ink": stroke_ink}

  remove = lambda logits_of, units, cost: jax.vmap(lambda order: stroke_attack.removal_attack(
      logits_of, order, units, cost, prediction, chunk=attack.chunk))
  per_ink = lambda values, ink: values / jnp.maximum(ink, 1e-6)
  stroke_orders = jnp.stack([faithfulness.ranking(sla, present),
                             faithfulness.ranking(per_ink(sla, stroke_ink), present),
                             faithfulness.random_order(order_key, present),
                             faithfulness.drawing_order(present),
                             stroke_attack.shortest_first(stroke_ink, present)])
  for name, value in remove(by_stroke, present, stroke_ink)(stroke_orders).items():
    out[f"strokes/{name}"] = value
  segment_orders = jnp.stack([faithfulness.ranking(psla, segments.valid),
                              faithfulness.ranking(per_ink(psla, segment_ink), segments.valid),
                              faithfulness.random_order(segment_key, segments.valid),
                              faithfulness.drawing_order(segments.valid)])
  for name, value in remove(by_segment, segments.valid, segment_ink)(segment_orders).items():
    out[f"segments/{name}"] = value
  touched = jax.vmap(lambda removed: jax.ops.segment_sum(
      removed.astype(jnp.int32), segments.stroke, num_strokes) > 0)(out["segments/removed_mask"])
  out["segments/strokes_touched"] = touched.sum(-1).astype(jnp.int32)

  out.update(stroke_attack.displacement_attacks(
      lambda moved: image_logits(sr.soft_rasterize(moved, lens, settings,
                                                   num_segments=num_segments,
                                                   num_pairs=pgd_pairs)),
      xy, lens, radii, prediction, random_key, steps=attack.pgd_steps,
      step_fraction=attack.step_fraction))
  out.update(noisy_strokes.filter_results(by_stroke, sla_label, stroke_ink, present, label,
                                          filter_key))
  return out
