"""Attribution-guided generation with sketch-rnn, against plain samples at the same calls.

The paper (CVPR 2024 explainability, spec B) names generation as a use of stroke
attribution: it shows which generated strokes a classifier ignores. Resampling the
strokes that work against the class is ours:

  guided   round 0: one fresh sample of the class's sketch-rnn generator, scored and
           attributed by the guide classifier (SLA of the target's log-probability,
           `DrawingScorer.attribute`). Each of `rounds` rounds: the strokes of the best
           drawing so far whose SLA is < 0 (`noisy_strokes.against_class`: all but the
           best when all are) are removed, the kept strokes (untouched, in their order,
           at their place) are fed to the generator, and the first as many strokes of
           its continuation as were removed are appended (`resample_against`); the
           guide scores and attributes the candidate, which becomes the best when the
           guide rates the target higher. A drawing with no negative stroke is final
           and costs nothing more.
  plain    k fresh samples; best-of-k keeps the one the guide rates highest.

Call accounting (`GuidedResult`): the guided arm spends, per drawing, one generator
sample a round it resamples (round 0's fresh sample, then one continuation: feeding
the kept rows plus `max_seq_len` sampled rows, as a fresh sample's `max_seq_len`) and
one guide evaluation per drawing the guide sees; so with `rounds` = k - 1 it spends at
most k generator samples and k guide evaluations, as plain best-of-k. A guide
evaluation of the guided arm is an SLA (m path points: m forward and backward passes
and one forward), of the plain arm one forward pass; the task also reports plain
best-of-k(m + 1), matched in guide forward passes.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.methods import noisy_strokes
from sketchjax.models import sketch_rnn
from sketchjax.sketch.sketch import from_stroke3

Drawing = list[np.ndarray]  # absolute polylines float[n_k, 2] in the generator's drawing units
Generator = tuple[sketch_rnn.GeneratorInfo, sketch_rnn.GeneratorParams]


class Guide(Protocol):
  """What the guided arm needs of a classifier (`DrawingScorer` is one)."""

  def attribute(self, drawings: Sequence[Drawing], targets: Sequence[int]
                ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(probabilities float[B, K], per-stroke SLA float[n_k] of each target)."""


def sample_drawings(generator: Generator, rng: jax.Array, num: int,
                    temperature: float) -> list[Drawing]:
  """`num` fresh samples in drawing units (a sample that ends at once has no stroke)."""
  info, params = generator
  return [list(from_stroke3(rows).strokes) for rows in
          sketch_rnn.sample(info, params, rng, num, temperature=temperature)]


def continuation_strokes(rows: np.ndarray, scale_factor: float, origin: np.ndarray,
                         count: int | None) -> Drawing:
  """Sampled rows float[T, 5] (model units) after a prefix ending at `origin` -> the first
  `count` (None: all) strokes as absolute polylines in drawing units.

  A row is the offset to a new point, then the pen state after it (lifted: the
  stroke ends there); rows stop before the first pen_end; a stroke still drawing
  after T rows is cut there.
  """
  rows = np.asarray(rows, np.float64)
  ends = np.flatnonzero(rows[:, 4] > 0.5)
  rows = rows[:ends[0]] if ends.size else rows
  points = np.asarray(origin, np.float64) + np.cumsum(rows[:, :2] * scale_factor, axis=0)
  splits = np.flatnonzero(rows[:, 3] > 0.5) + 1
  strokes = [s for s in np.split(points, splits) if len(s)]
  return strokes if count is None else strokes[:count]


def against_target(sla: Sequence[np.ndarray]) -> list[np.ndarray]:
  """bool[n_k] per drawing: the strokes with SLA < 0, all but the best when all are
  (`noisy_strokes.against_class`, one vmapped call for the batch)."""
  width = max([len(a) for a in sla] + [1])
  padded = np.zeros((len(sla), width), np.float32)
  present = np.zeros((len(sla), width), bool)
  for b, a in enumerate(sla):
    padded[b, :len(a)], present[b, :len(a)] = a, True
  against = np.asarray(jax.vmap(noisy_strokes.against_class)(jnp.asarray(padded),
                                                             jnp.asarray(present)))
  return [against[b, :len(a)] for b, a in enumerate(sla)]


def _pow2(n: int, least: int) -> int:
  return max(least, 1 << max(n - 1, 0).bit_length())


def resample_against(generator: Generator, drawings: Sequence[Drawing],
                     against: Sequence[np.ndarray], rng: jax.Array, temperature: float
                     ) -> tuple[list[Drawing], np.ndarray]:
  """Each drawing with its strokes where `against[b]` is True replaced by new ones.

  The kept strokes (the same arrays, in their order) are fed to the generator as its
  own rows (`continue_stroke5`), which then samples `max_seq_len` rows; the first
  as many strokes as were removed are appended (fewer when it ends the drawing). A
  drawing with no stroke is sampled afresh, whole; one with no stroke against is
  returned as it is and costs no sample. One jitted call for the batch, padded to a
  power of two of the drawings given (not of those sampled) and of prefix rows, so
  the rounds of a run share one shape.

  Returns:
    (the drawings, sampled bool[B]: which cost a generator sample).
  """
  info, params = generator
  if len(against) != len(drawings):
    raise ValueError(f"{len(drawings)} drawings but {len(against)} stroke masks")
  for b, (drawing, mask) in enumerate(zip(drawings, against)):
    if len(mask) != len(drawing):
      raise ValueError(f"drawing {b} has {len(drawing)} strokes, its mask {len(mask)}")
  sampled = np.array([len(d) == 0 or bool(np.any(m)) for d, m in zip(drawings, against)])
  out = [list(d) for d in drawings]
  chosen = np.flatnonzero(sampled)
  if not chosen.size:
    return out, sampled
  kept = {b: [s for s, gone in zip(drawings[b], against[b]) if not gone] for b in chosen}
  prefixes = {b: sketch_rnn.prefix_stroke5(kept[b], info.scale_factor) if kept[b]
              else np.zeros((0, 5), np.float32) for b in chosen}
  rows = np.zeros((_pow2(len(drawings), 4), _pow2(max(len(p) for p in prefixes.values()), 256),
                   5), np.float32)
  lengths = np.zeros(rows.shape[0], np.int32)
  for row, b in enumerate(chosen):
    rows[row, :len(prefixes[b])], lengths[row] = prefixes[b], len(prefixes[b])
  sampled_rows = np.asarray(sketch_rnn.continue_stroke5(
      params, rows, lengths, rng, num=1, steps=info.max_seq_len, temperature=temperature))
  for row, b in enumerate(chosen):
    origin = kept[b][-1][-1] if kept[b] else np.zeros(2)
    count = int(np.sum(against[b])) if len(drawings[b]) else None
    out[b] = kept[b] + continuation_strokes(sampled_rows[row, 0], info.scale_factor, origin,
                                            count)
  return out, sampled


@dataclasses.dataclass
class GuidedResult:
  """The guided arm on B drawings of one target class.

  Attributes:
    drawings: the best drawing of each (by the guide).
    history: history[r][b] the best drawing of b after round r (r = 0: the start).
    guide_probability: float[B] the guide's probability of the target for each.
    start_sla: SLA float[n_k] of each start drawing under the guide.
    generator_samples, guide_evaluations: int[B] calls spent on each (round 0 included).
    accepted: int[B] rounds whose candidate replaced the best.
    resampled_strokes: int[B] strokes removed and resampled, over all rounds.
  """

  drawings: list[Drawing]
  history: list[list[Drawing]]
  guide_probability: np.ndarray
  start_sla: list[np.ndarray]
  generator_samples: np.ndarray
  guide_evaluations: np.ndarray
  accepted: np.ndarray
  resampled_strokes: np.ndarray


def guided_generation(generator: Generator, guide: Guide, start: Sequence[Drawing], target: int,
                      rounds: int, rng: jax.Array, temperature: float) -> GuidedResult:
  """Runs the guided arm (module docstring) from fresh samples `start` (round 0's)."""
  if rounds < 0:
    raise ValueError(f"rounds must be >= 0, got {rounds}")
  size = len(start)
  targets = np.full(size, target, np.int32)
  probabilities, sla = guide.attribute(start, targets)
  best, best_p, best_sla = [list(d) for d in start], probabilities[:, target].copy(), list(sla)
  samples, evaluations = np.ones(size, np.int64), np.ones(size, np.int64)
  accepted, resampled = np.zeros(size, np.int64), np.zeros(size, np.int64)
  history = [list(best)]
  for r in range(rounds):
    against = against_target(best_sla)
    candidates, sampled = resample_against(generator, best, against, jax.random.fold_in(rng, r),
                                           temperature)
    chosen = np.flatnonzero(sampled)
    if chosen.size:
      p, values = guide.attribute([candidates[b] for b in chosen], targets[chosen])
      for row, b in enumerate(chosen):
        resampled[b] += int(np.sum(against[b])) if len(best[b]) else 0
        if p[row, target] > best_p[b]:
          best[b], best_p[b], best_sla[b] = candidates[b], p[row, target], values[row]
          accepted[b] += 1
    samples[chosen] += 1
    evaluations[chosen] += 1
    history.append(list(best))
  return GuidedResult(best, history, best_p, list(sla), samples, evaluations, accepted,
                      resampled)


def best_of(guide_probability: np.ndarray, k: int) -> np.ndarray:
  """Plain best-of-k: int[B] the index, among each row's first k samples, that the guide
  rates highest (guide_probability float[B, >= k] of the target)."""
  if not 1 <= k <= guide_probability.shape[1]:
    raise ValueError(f"best-of-{k} needs 1..{guide_probability.shape[1]} samples a drawing")
  return np.argmax(guide_probability[:, :k], axis=1)
