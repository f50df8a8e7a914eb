"""The stroke_attack task's attacks on SketchXAINet (a classify workdir of the vector model).

`attack_all` runs `vector_attack.attack_sketch` over held-out drawings in batches of
similar size, in the drawings' own canvas units (0..255 for simplified QuickDraw), and
returns per-sketch dicts of the same keys as the raster path of
sketchjax/tasks/stroke_attack.py, with `scale` 1 (the budgets are already canvas units).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.data import tokenize
from sketchjax.data.records import Drawing
from sketchjax.methods import raster_attack, vector_attack
from sketchjax.tasks import attack_batches


def truncated_strokes(drawing: Drawing, tokenizer: tokenize.TokenizerConfig) -> list[np.ndarray]:
  """The drawing's strokes as the classifier's tokeniser keeps them: the first
  `max_strokes`, each cut to `max(point_buckets)` points (float32[n, 2], canvas units)."""
  limit = max(tokenizer.point_buckets)
  return [np.asarray(s[:limit], np.float32) for s in drawing.sketch.strokes[:tokenizer.max_strokes]]


def slot_count(longest: int, tokenizer: tokenize.TokenizerConfig) -> int:
  """Stroke slots the tokeniser gives a batch whose longest sketch has `longest` strokes (the
  output of a model with `mask_padding=False` depends on it)."""
  if tokenizer.stroke_buckets is None:
    return tokenizer.max_strokes
  fits = [b for b in sorted(tokenizer.stroke_buckets) if b >= longest]
  return min(tokenizer.max_strokes, fits[0] if fits else max(tokenizer.stroke_buckets))


def pad(sketches: Sequence[Sequence[np.ndarray]], tokenizer: tokenize.TokenizerConfig
        ) -> tuple[np.ndarray, np.ndarray, int]:
  """(xy float32[B, S, P, 2], lens int32[B, S], N segments): S by `slot_count`, P and N
  powers of two (at least 4), so that batches share compiled shapes."""
  num_slots = slot_count(max(len(s) for s in sketches), tokenizer)
  num_points = max(4, 1 << (max(len(p) for s in sketches for p in s) - 1).bit_length())
  padded = [sr.pad_strokes(s, num_slots, num_points) for s in sketches]
  xy, lens = np.stack([p[0] for p in padded]), np.stack([p[1] for p in padded])
  segments = sr.count_segments(lens)
  return xy, lens, max(4, 1 << (segments - 1).bit_length())


def attack_all(model: Any, params: Any, class_names: Sequence[str],
               tokenizer: tokenize.TokenizerConfig, drawings: Sequence[Drawing],
               config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Per-sketch results (numpy, `vector_attack.attack_sketch` plus drawing, label, scale = 1,
  xy and lens in canvas units) in the order of `drawings`."""
  attack = raster_attack.AttackSettings(**config.attack.settings.to_dict())
  radii = np.asarray(config.attack.radii, np.float32)

  @functools.partial(jax.jit, static_argnames=("num_segments",))
  def attack_batch(xy, lens, labels, keys, num_segments):
    one = lambda args: vector_attack.attack_sketch(
        model, params, *args[:3], radii, args[3], attack, num_segments=num_segments,
        dot_length=config.attack.dot_length)
    return jax.lax.map(one, (xy, lens, labels, keys), batch_size=config.attack.sketches_at_once)

  strokes = [truncated_strokes(d, tokenizer) for d in drawings]
  key = jax.random.key(config.seed)
  results: list[dict[str, Any] | None] = [None] * len(drawings)
  for start, chosen in attack_batches.size_sorted_batches(
      [sum(len(s) for s in d) for d in strokes], config.attack.batch_size):
    xy, lens, num_segments = pad([strokes[i] for i in chosen], tokenizer)
    labels = np.array([class_names.index(drawings[i].word) for i in chosen], np.int32)
    out = jax.device_get(attack_batch(
        xy, lens, labels, jax.random.split(jax.random.fold_in(key, start), len(chosen)),
        num_segments=num_segments))
    attack_batches.fill_results(results, chosen, drawings, labels, np.ones(len(chosen)), xy,
                                lens, out)
  return results
