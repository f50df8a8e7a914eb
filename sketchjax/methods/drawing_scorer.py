"""A raster classifier restricted to a few classes, scoring and attributing batches of drawings.

`DrawingScorer` takes drawings as absolute polylines in any units (e.g. sketch-rnn's
drawing units), makes each like a simplified QuickDraw drawing (`as_simplified`:
aligned to 0, longest side 255, RDP with epsilon 2; the strokes, their number and
order unchanged), draws them with the soft rasteriser on the classifier's input
(sketchjax/data/soft_rasterize.py) and
  probabilities  softmax over the K chosen classes' logits, float32[B, K];
  attribute      SLA of the target's log-probability (over the K classes): integrated
                 gradients over per-stroke opacities from the blank canvas to the
                 drawing (design spec B.3, as sketchjax.methods.attribution), float[n_k]
                 per drawing, with the probabilities at full opacity.
Every path point of every drawing goes through the classifier in one batch (the
gradient of the sum of their scores is each one's own gradient), the strokes of the
whole batch are drawn with one packed `draw_batch`. Shapes are rounded up to powers
of two above floors, so a run compiles a handful.

`evaluations` counts the drawings scored (either call), the unit of the call
accounting of sketchjax.methods.guided_generation. Restricting a 345-way model to K
classes (a softmax over their logits) is ours.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.sketch import normalize

ImagesLogits = Callable[[jax.Array], jax.Array]  # float32[B, size, size] ink -> logits [B, C]
Strokes = Sequence[np.ndarray]  # absolute polylines float[n_k, 2], n_k >= 1

# Least (strokes, points a stroke, segment rows a drawing, pair rows a drawing of the
# batch): sketch-rnn drawings have < 32 strokes (hedgehogs up to ~70), < 128 points a
# stroke and < 256 segments after RDP, and < 512 (segment, tile) pairs on a 64-pixel
# canvas with 4 x 4 samples a pixel; with the batch always `batch_size` drawings, a run
# compiles one shape a function but for the rare larger drawing.
_FLOOR = (32, 128, 256, 512)


def as_simplified(strokes: Strokes, epsilon: float = 2.0) -> list[np.ndarray]:
  """The drawing as the official `full/simplified` files (float, not rounded): aligned to 0,
  scaled uniformly to a longest side of 255, RDP with `epsilon` on every stroke. Stroke k
  of the result is stroke k of the input (none is dropped: RDP keeps the ends)."""
  points = np.concatenate([np.asarray(s, np.float64).reshape(-1, 2) for s in strokes])
  low = points.min(0)
  scale = 255.0 / max(float((points.max(0) - low).max()), 1e-9)
  return [normalize.rdp((np.asarray(s, np.float64).reshape(-1, 2) - low) * scale, epsilon)
          for s in strokes]


def _pow2(n: int, least: int) -> int:
  return max(least, 1 << max(n - 1, 0).bit_length())


def pixel_batch(pixels: Sequence[Sequence[np.ndarray]], settings: sr.RasterSettings
                ) -> tuple[np.ndarray, np.ndarray, int, int]:
  """Pixel polylines of B drawings -> xy float32[B, S, P, 2], lens int32[B, S], segment
  rows N a drawing and (segment, tile) pair rows M of the whole batch (powers of two, at
  least `_FLOOR`)."""
  num_strokes = _pow2(max(len(s) for s in pixels), _FLOOR[0])
  num_points = _pow2(max(len(p) for s in pixels for p in s), _FLOOR[1])
  padded = [sr.pad_strokes(s, num_strokes, num_points) for s in pixels]
  xy, lens = np.stack([p[0] for p in padded]), np.stack([p[1] for p in padded])
  num_segments = _pow2(sr.count_segments(lens), _FLOOR[2])
  return xy, lens, num_segments, max(sr.tile_pair_budget(xy, lens, settings, batch_total=True),
                                     _FLOOR[3] * len(pixels))


def _log_probabilities(images_logits: ImagesLogits, class_index: jax.Array,
                       images: jax.Array) -> jax.Array:
  """float[..., size, size] -> log-softmax over the chosen classes' logits float[..., K]."""
  lead = images.shape[:-2]
  logits = images_logits(images.reshape(-1, *images.shape[-2:]))[:, class_index]
  return jax.nn.log_softmax(logits).reshape(*lead, class_index.shape[0])


def batch_probabilities(images_logits: ImagesLogits, class_index: jax.Array,
                        settings: sr.RasterSettings, xy: jax.Array, lens: jax.Array, *,
                        num_segments: int, num_pairs: int) -> jax.Array:
  """B drawings (pixel polylines [B, S, P, 2], lens [B, S]) -> probabilities float32[B, K]."""
  coverage = sr.draw_batch(xy, lens, settings, num_segments=num_segments, num_pairs=num_pairs)
  images = 1.0 - jnp.prod(1.0 - coverage, axis=1)
  return jnp.exp(_log_probabilities(images_logits, class_index, images))


def batch_sla(images_logits: ImagesLogits, class_index: jax.Array, settings: sr.RasterSettings,
              steps: int, xy: jax.Array, lens: jax.Array, targets: jax.Array, *,
              num_segments: int, num_pairs: int) -> tuple[jax.Array, jax.Array]:
  """B drawings -> (probabilities float32[B, K], SLA float32[B, S] of each target's
  log-probability; 0 for empty slots). IG midpoint rule with `steps` points: the SLA of
  a drawing sums to log p(drawing) - log p(blank) up to the rule's error."""
  coverage = sr.draw_batch(xy, lens, settings, num_segments=num_segments, num_pairs=num_pairs)
  present = (lens > 0).astype(jnp.float32)

  def log_probabilities(opacity):  # [M, B, S] -> [M, B, K]
    images = 1.0 - jnp.prod(1.0 - opacity[..., None, None] * coverage[None], axis=2)
    return _log_probabilities(images_logits, class_index, images)

  target_score = lambda lp: jnp.take_along_axis(lp, targets[None, :, None], axis=2)[..., 0]
  full = log_probabilities(present[None])[0]
  alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
  gradients = jax.grad(lambda o: target_score(log_probabilities(o)).sum())(
      alphas[:, None, None] * present[None])
  return jnp.exp(full), gradients.mean(0) * present


@dataclasses.dataclass
class DrawingScorer:
  """A raster classifier of float32[B, size, size] ink images, restricted to K classes.

  Attributes:
    images_logits: images -> logits [B, C] over the classifier's own C classes.
    class_index: int[K], the outputs of the K classes (in the caller's order).
    settings: the soft rasteriser's settings for the classifier's input.
    to_pixels: simplified strokes (0..255) -> the classifier's pixel polylines.
    ig_steps: SLA path points.
    batch_size: drawings a jitted call.
    evaluations: drawings scored so far (probabilities or attribute).
  """

  images_logits: ImagesLogits
  class_index: Sequence[int]
  settings: sr.RasterSettings
  to_pixels: Callable[[Strokes], list[np.ndarray]]
  ig_steps: int = 8
  batch_size: int = 16
  evaluations: int = 0

  def __post_init__(self):
    index = jnp.asarray(np.asarray(self.class_index, np.int32))
    static = ("num_segments", "num_pairs")
    self._probabilities = jax.jit(functools.partial(
        batch_probabilities, self.images_logits, index, self.settings), static_argnames=static)
    self._sla = jax.jit(functools.partial(batch_sla, self.images_logits, index, self.settings,
                                          self.ig_steps), static_argnames=static)

  @property
  def num_classes(self) -> int:
    return len(self.class_index)

  def _chunks(self, drawings: Sequence[Strokes]):
    """(indices of the non-empty drawings, their pixel batch of `batch_size`) chunk by
    chunk (blank drawings fill the last)."""
    real = [i for i, d in enumerate(drawings) if len(d)]
    for start in range(0, len(real), self.batch_size):
      chosen = real[start:start + self.batch_size]
      pixels = [self.to_pixels(as_simplified(drawings[i])) for i in chosen]
      pixels += [[]] * (self.batch_size - len(chosen))  # blank drawings: one batch shape
      yield chosen, pixel_batch(pixels, self.settings)

  def probabilities(self, drawings: Sequence[Strokes]) -> np.ndarray:
    """float32[B, K]; a drawing with no stroke gets all 0 (no class)."""
    self.evaluations += len(drawings)
    out = np.zeros((len(drawings), self.num_classes), np.float32)
    for chosen, (xy, lens, n, m) in self._chunks(drawings):
      out[chosen] = np.asarray(self._probabilities(xy, lens, num_segments=n,
                                                   num_pairs=m))[:len(chosen)]
    return out

  def attribute(self, drawings: Sequence[Strokes], targets: Sequence[int]
                ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(probabilities float32[B, K], SLA float32[n_k] of targets[b] for each drawing)."""
    if len(targets) != len(drawings):
      raise ValueError(f"{len(drawings)} drawings but {len(targets)} targets")
    self.evaluations += len(drawings)
    probabilities = np.zeros((len(drawings), self.num_classes), np.float32)
    sla = [np.zeros(len(d), np.float32) for d in drawings]
    targets = np.asarray(targets, np.int32)
    for chosen, (xy, lens, n, m) in self._chunks(drawings):
      padded = np.zeros(len(lens), np.int32)
      padded[:len(chosen)] = targets[chosen]
      p, values = jax.device_get(self._sla(xy, lens, padded, num_segments=n, num_pairs=m))
      probabilities[chosen] = p[:len(chosen)]
      for row, i in enumerate(chosen):
        sla[i] = np.asarray(values[row, :len(drawings[i])])
    return probabilities, sla
