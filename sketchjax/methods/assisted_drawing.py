"""Assisted drawing: what a raster classifier sees in a drawing in progress, and which next
stroke would help it.

`Assistant.analyze(strokes, target)` takes the strokes drawn so far (absolute
polylines in any units, e.g. a web canvas's pixels) and
  normalises  them as QuickDraw's simplified drawings (aligned to 0, longest
              side 255, RDP with epsilon 2; `Frame` maps back);
  classifies  the drawing (official bitmap geometry, soft rasteriser) with a
              28x28 raster model (doodleNet);
  attributes  the target's log-probability to the strokes: SLA, integrated
              gradients over per-stroke opacities from the blank canvas
              (as sketchjax.methods.attribution), each stroke labelled "helps"
              (> 0), "hurts" (< 0) or "noise" (less than `noise_fraction` of
              the attribution mass, |A_k| / sum |A|);
  suggests    next strokes: a sketch-rnn generator is fed the drawing and
              samples `candidates` continuations (`continue_stroke5`); the
              first new stroke of each is added to the drawing and the
              `suggestions` with the largest gain in the target's probability
              are returned (in the caller's units, best first).

The generator is the target's own when there is one, otherwise the one whose
class the classifier rates highest for the drawing. Array shapes are rounded up
to powers of two (strokes, points a stroke, segments, rasteriser pairs, prefix
rows) so a session compiles a handful of shapes; `warm_up` compiles the usual ones.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.models import sketch_rnn
from sketchjax.sketch import normalize

ImageLogits = Callable[[jax.Array], jax.Array]  # float32[B, 28, 28] ink -> logits [B, C]
Generator = tuple[sketch_rnn.GeneratorInfo, sketch_rnn.GeneratorParams]


@dataclasses.dataclass(frozen=True)
class AssistSettings:
  """How `Assistant` analyses a drawing (see the module docstring)."""

  top_classes: int = 5
  ig_steps: int = 16
  noise_fraction: float = 0.05
  candidates: int = 12
  suggestions: int = 3
  stroke_rows: int = 32  # rows sampled per candidate (its next stroke is cut out of them)
  temperature: float = 0.4
  rdp_epsilon: float = 2.0
  supersample: int = 4
  max_segments: int = 1024  # after RDP; real drawings have < 400


class TooComplex(ValueError):
  """A drawing with more segments than `AssistSettings.max_segments` after simplification."""


@dataclasses.dataclass(frozen=True)
class Frame:
  """The caller's units <-> drawing units (QuickDraw simplified: min 0, longest side 255)."""

  offset: np.ndarray  # float64[2], the drawing's min corner in the caller's units
  scale: float  # drawing units per caller unit

  @classmethod
  def of(cls, strokes: Sequence[np.ndarray]) -> "Frame":
    points = np.concatenate(strokes).astype(np.float64)
    low = points.min(0)
    return cls(low, 255.0 / max(float((points.max(0) - low).max()), 1e-9))

  def to_drawing(self, points: np.ndarray) -> np.ndarray:
    return (np.asarray(points, np.float64) - self.offset) * self.scale

  def to_caller(self, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) / self.scale + self.offset


def simplified(strokes: Sequence[np.ndarray], frame: Frame, epsilon: float) -> list[np.ndarray]:
  """The strokes in `frame`'s drawing units, each simplified by RDP."""
  return [normalize.rdp(frame.to_drawing(s), epsilon) for s in strokes]


def _renormalised(strokes: list[np.ndarray]) -> list[np.ndarray]:
  frame = Frame.of(strokes)
  return [frame.to_drawing(s) for s in strokes]


def stroke_labels(values: np.ndarray, noise_fraction: float) -> list[str]:
  """"helps" / "hurts" / "noise" for per-stroke attributions float[S] (noise: less than
  `noise_fraction` of sum |A|)."""
  values = np.asarray(values, np.float64)
  mass = np.abs(values).sum()
  return ["noise" if abs(v) < noise_fraction * mass or mass == 0 else
          "helps" if v > 0 else "hurts" for v in values]


# Least shapes (strokes, points a stroke, segments, pairs): drawings of up to 16 strokes
# of up to 128 points after RDP (99.7% of real drawings; the rest, spirals, compile one
# more shape) share one shape. Prefix rows cost only their real length (`feed` loops
# over it), so one floor fits every drawing of up to `max_segments` segments.
_DRAWING_FLOOR = (16, 128, 512, 1024)
_BATCH_FLOOR = (16, 128, 512, 8192)
_PREFIX_FLOOR = 2048


def _pow2(n: int, least: int) -> int:
  return max(least, 1 << max(n - 1, 0).bit_length())


def _pixel_batch(sketches: Sequence[Sequence[np.ndarray]], settings: sr.RasterSettings,
                 floor: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
  """Drawings in drawing units -> official-bitmap pixel polylines xy [B, S, P, 2], lens
  [B, S], segment rows N a drawing and pair rows M for the whole batch, each a power of
  two at least `floor` (S, P, N, M)."""
  pixels = [sr.official_pixels(s) for s in sketches]
  num_strokes = _pow2(max(len(s) for s in pixels), floor[0])
  num_points = _pow2(max(len(p) for s in pixels for p in s), floor[1])
  padded = [sr.pad_strokes(s, num_strokes, num_points) for s in pixels]
  xy, lens = np.stack([p[0] for p in padded]), np.stack([p[1] for p in padded])
  pairs = sr.tile_pair_budget(xy, lens, settings, batch_total=True)
  return xy, lens, _pow2(sr.count_segments(lens), floor[2]), max(pairs, floor[3])


class Assistant:
  """A 28x28 raster classifier and sketch-rnn generators, jitted for `analyze`.

  Args:
    image_logits: float32[B, 28, 28] ink images (1 = ink) -> logits [B, C].
    class_names: the classifier's classes in output order.
    generators: {class name (the classifier's spelling): (info, params)}.
    settings: how to analyse.
  """

  def __init__(self, image_logits: ImageLogits, class_names: Sequence[str],
               generators: Mapping[str, Generator], settings: AssistSettings = AssistSettings()):
    unknown = sorted(set(generators) - set(class_names))
    if unknown:
      raise ValueError(f"generators for classes the classifier does not know: {unknown}")
    if not generators:
      raise ValueError("no sketch-rnn generator: suggestions need at least one")
    self.class_names = tuple(class_names)
    self.generators = dict(generators)
    self.settings = settings
    self.raster = dataclasses.replace(sr.OFFICIAL, supersample=settings.supersample,
                                      edge=1.0 / settings.supersample)
    self._explain = jax.jit(functools.partial(_explain, image_logits, self.raster,
                                              settings.ig_steps),
                            static_argnames=("num_segments", "num_pairs"))
    self._probabilities = jax.jit(functools.partial(_probabilities, image_logits, self.raster),
                                  static_argnames=("num_segments", "num_pairs"))

  def analyze(self, strokes: Sequence[np.ndarray], target: str | None = None,
              seed: int = 0) -> dict:
    """Top classes, per-stroke attribution and ranked next strokes of a drawing.

    Args:
      strokes: absolute polylines float[n_k, 2] (n_k >= 1), in the caller's units.
      target: the class explained and helped; None = the top class.
      seed: sampling seed of the suggestions.
    Returns:
      a JSON-ready dict: `classes` [{name, probability}], `target`,
      `target_probability`, `strokes` [{attribution, label}], `generator`,
      `suggestions` [{points (caller's units), gain, probability}] and
      `timing_ms` {explain, suggest}.
    Raises:
      ValueError: an unknown target; `TooComplex`: too many segments.
    """
    if target is not None and target not in self.class_names:
      raise ValueError(f"unknown target {target!r}")
    s = self.settings
    start = time.perf_counter()
    frame = Frame.of(strokes)
    drawing = simplified(strokes, frame, s.rdp_epsilon)
    segments = sum(max(len(stroke) - 1, 1) for stroke in drawing)
    if segments > s.max_segments:
      raise TooComplex(f"the drawing has {segments} segments after simplification, at most "
                       f"{s.max_segments}")
    xy, lens, num_segments, num_pairs = _pixel_batch([drawing], self.raster, _DRAWING_FLOOR)
    target_index = -1 if target is None else self.class_names.index(target)
    probabilities, target_index, ig = jax.device_get(self._explain(
        xy[0], lens[0], target_index, num_segments=num_segments, num_pairs=num_pairs))
    target_index = int(target_index)
    explained = time.perf_counter()
    ig = ig[:len(strokes)]
    top = np.argsort(-probabilities)[:s.top_classes]
    out = {
        "classes": [{"name": self.class_names[i], "probability": float(probabilities[i])}
                    for i in top],
        "target": self.class_names[target_index],
        "target_probability": float(probabilities[target_index]),
        "strokes": [{"attribution": float(v), "label": label}
                    for v, label in zip(ig, stroke_labels(ig, s.noise_fraction))],
    }
    generator = self.pick_generator(out["target"], probabilities)
    out["generator"] = generator
    out["suggestions"] = self._suggest(drawing, frame, generator, target_index, seed)
    done = time.perf_counter()
    out["timing_ms"] = {"explain": 1e3 * (explained - start), "suggest": 1e3 * (done - explained)}
    return out

  def pick_generator(self, target: str, probabilities: np.ndarray) -> str:
    """The target's generator, else the one whose class is most probable now."""
    if target in self.generators:
      return target
    return max(self.generators, key=lambda name: probabilities[self.class_names.index(name)])

  def _suggest(self, drawing: list[np.ndarray], frame: Frame, generator: str, target: int,
               seed: int) -> list[dict]:
    """The best next strokes of `drawing` (drawing units) by the target's probability gain."""
    s = self.settings
    info, params = self.generators[generator]
    rows = sketch_rnn.prefix_stroke5(drawing, info.scale_factor)
    padded = np.zeros((1, _pow2(len(rows), _PREFIX_FLOOR), 5), np.float32)
    padded[0, :len(rows)] = rows
    sampled = np.asarray(sketch_rnn.continue_stroke5(
        params, padded, np.array([len(rows)]), jax.random.key(seed), num=s.candidates,
        steps=s.stroke_rows, temperature=s.temperature))[0]
    origin = drawing[-1][-1]
    candidates = [sketch_rnn.first_stroke(r, info.scale_factor, origin) for r in sampled]
    real = np.array([len(c) > 0 for c in candidates])
    # Each candidate drawing is renormalised (a stroke may leave the current box); row 0
    # is the drawing itself, so gains compare like with like. An empty candidate (the
    # model ended the drawing) is scored as the drawing alone, keeping the batch's shape.
    sketches = [_renormalised(drawing + ([c] if len(c) else [])) for c in candidates]
    xy, lens, num_segments, num_pairs = _pixel_batch([_renormalised(drawing)] + sketches,
                                                     self.raster, _BATCH_FLOOR)
    probability = np.asarray(self._probabilities(
        xy, lens, target, num_segments=num_segments, num_pairs=num_pairs))
    gains = probability[1:] - probability[0]
    best = [i for i in np.argsort(-gains, kind="stable") if real[i]][:s.suggestions]
    return [{"points": frame.to_caller(candidates[i]).round(2).tolist(),
             "gain": float(gains[i]), "probability": float(probability[1 + i])} for i in best]

  def warm_up(self, max_strokes: int = 16) -> None:
    """Compiles the shapes of drawings of up to `max_strokes` strokes (each power of two
    from 16: the drawing, and the drawing with a candidate, which may need the next)."""
    counts = [1] + [n for n in (16, 32, 64) if n <= max_strokes]
    for count in counts:
      angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
      self.analyze([np.c_[np.cos(a) * np.array([0, 100, 90]),
                          np.sin(a) * np.array([0, 100, 80])] for a in angles])


def _explain(image_logits: ImageLogits, settings: sr.RasterSettings, steps: int,
             xy: jax.Array, lens: jax.Array, target: jax.Array, *, num_segments: int,
             num_pairs: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One drawing -> (class probabilities [C], the target (-1 = top class), SLA IG [S] of
  the target's log-probability).

  IG's path points are one batch through the classifier: the gradient of the sum of
  their scores with respect to their opacities float[steps, S] is each point's own
  gradient (as `attribution.integrated_gradients`, which differentiates a vmap of
  single images: ~9x slower for doodleNet on this CPU).
  """
  coverage = sr.draw_strokes(xy, lens, settings, num_segments=num_segments,
                             num_pairs=num_pairs)
  present = (lens > 0).astype(jnp.float32)
  log_probabilities = lambda opacity: jax.nn.log_softmax(image_logits(
      1.0 - jnp.prod(1.0 - opacity[:, :, None, None] * coverage[None], axis=1)))
  full = log_probabilities(present[None])[0]
  target = jnp.where(target < 0, jnp.argmax(full), target)
  alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
  path_gradients = jax.grad(lambda o: log_probabilities(o)[:, target].sum())(
      alphas[:, None] * present[None])
  return jnp.exp(full), target, path_gradients.mean(0) * present


def _probabilities(image_logits: ImageLogits, settings: sr.RasterSettings, xy: jax.Array,
                   lens: jax.Array, target: jax.Array, *, num_segments: int,
                   num_pairs: int) -> jax.Array:
  """B drawings [B, S, P, 2] -> the target's probability float32[B]."""
  coverage = sr.draw_batch(xy, lens, settings, num_segments=num_segments, num_pairs=num_pairs)
  images = 1.0 - jnp.prod(1.0 - coverage, axis=1)
  return jax.nn.softmax(image_logits(images))[:, target]
