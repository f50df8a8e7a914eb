"""Stroke attribution of a sketch query against a retrieved photo, and stroke-order analyses.

The paper's (spec B, CVPR 2024 explainability): stroke-level attribution (SLA)
of a sketch model, and, in retrieval, comparing the order of strokes that
attribution predicts with the order the human drew. Ours: how a trained SBIR
sketch encoder becomes a differentiable function of per-stroke opacities
(`QueryRenderer`), the similarity score explained, the rank correlation and the
prefix ("early retrieval") embeddings, all batched with `vmap`.

A query drawing is drawn as the retrieval pipeline draws it
(`image_folders.render_drawing` at `render_size` px, the official bitmap
geometry, then the preprocessing's bilinear resize to the encoder's
`image_size` and x / 127.5 - 1): each stroke alone by the soft rasteriser at
`render_size` (coverage float[S, R, R], 1 = ink), composited with per-stroke
opacities, resized by PIL's own bilinear weights (`pil_bilinear_matrix`, a
fixed linear map [size, R]) and mapped to [-1, 1] with white = 1. Score of a
query against a photo: the cosine of the two unit embeddings.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from sketchjax.data import soft_rasterize as sr
from sketchjax.methods import attribution, faithfulness

Embed = Callable[[jax.Array], jax.Array]  # images float[B, s, s, 3] in [-1, 1] -> unit [B, D]


@functools.lru_cache(maxsize=8)
def pil_bilinear_matrix(source: int, target: int) -> np.ndarray:
  """PIL's antialiased bilinear resize source -> target as a matrix float32[target, source]
  (read from PIL itself: the resize of an identity image)."""
  eye = Image.fromarray(np.eye(source, dtype=np.float32), mode="F")
  return np.asarray(eye.resize((target, source), Image.Resampling.BILINEAR)).T.copy()


@dataclasses.dataclass(frozen=True)
class QueryRenderer:
  """How the retrieval pipeline draws a QuickDraw query, as a differentiable map.

  Attributes:
    settings: the soft rasteriser at `render_size` (line 16 canvas units of the
      official 256 + 2 * 16 + 16 canvas, scaled to the size).
    image_size: the encoder's input side s.
  """

  settings: sr.RasterSettings
  image_size: int

  @classmethod
  def pipeline(cls, image_size: int, render_size: int = 256,
               supersample: int = 2) -> QueryRenderer:
    """The renderer of `load_image(vector_size=render_size)` + the "mobilenet" preprocessing
    at `image_size`."""
    scale = render_size / sr.OFFICIAL.size
    settings = sr.RasterSettings(size=render_size, line_width=sr.OFFICIAL.line_width * scale,
                                 edge=1.0 / supersample, supersample=supersample, tile=8)
    return cls(settings, image_size)

  def pixels(self, strokes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Simplified strokes (0..255) -> polylines in pixels of the `render_size` canvas."""
    scale = self.settings.size / sr.OFFICIAL.size
    return [p * scale for p in sr.official_pixels(strokes)]

  def images(self, ink: jax.Array) -> jax.Array:
    """Ink float[..., R, R] (1 = ink) -> encoder input float32[..., s, s, 3] in [-1, 1]."""
    resize = jnp.asarray(pil_bilinear_matrix(self.settings.size, self.image_size))
    small = jnp.einsum("ir,...rc,jc->...ij", resize, ink, resize)
    return jnp.repeat((1.0 - 2.0 * small)[..., None], 3, axis=-1)


def similarity_score(embed: Embed, renderer: QueryRenderer, coverage: jax.Array,
                     photo: jax.Array) -> Callable[[jax.Array], jax.Array]:
  """Per-stroke opacities float[S] -> cosine of the query drawn with them and `photo` [D]
  (a unit embedding); `coverage` float[S, R, R] from `sr.draw_strokes`."""
  image_score = lambda ink: embed(renderer.images(ink)[None])[0] @ photo
  return attribution.stroke_score(image_score, coverage)


def query_attributions(embed: Embed, renderer: QueryRenderer, coverage: jax.Array,
                       present: jax.Array, photo: jax.Array, *, steps: int = 32,
                       chunk: int | None = None) -> dict[str, jax.Array]:
  """SLA of one query against one photo.

  Returns:
    sla_ig: float32[S], IG over stroke opacities from the blank canvas (sums to
      score - blank_score up to the Riemann error); sla_grad_x_input,
      occlusion: float32[S] (0 for empty slots); score, blank_score: cosines of
      the whole query and of the blank canvas with the photo.
  """
  score = similarity_score(embed, renderer, coverage, photo)
  ones = present.astype(jnp.float32)
  zeros = jnp.zeros_like(ones)
  return {
      "sla_ig": jnp.where(present, attribution.integrated_gradients(
          score, ones, zeros, steps=steps, chunk=chunk), 0.0),
      "sla_grad_x_input": jnp.where(present,
                                    attribution.gradient_times_input(score, ones, zeros), 0.0),
      "occlusion": attribution.occlusion(score, present),
      "score": score(ones),
      "blank_score": score(zeros),
  }


def prefix_counts(num_strokes: jax.Array, fractions: jax.Array) -> jax.Array:
  """Strokes kept at each fraction of a drawing's n strokes: ceil(f * n), at least 1
  (int32[K]); a small tolerance keeps f * n = 3.0000001 at 3."""
  n = num_strokes.astype(jnp.float32)
  return jnp.maximum(jnp.ceil(fractions * n - 1e-4), 1).astype(jnp.int32)


def prefix_masks(order: jax.Array, present: jax.Array, counts: jax.Array) -> jax.Array:
  """Keep masks float32[K, S]: the first counts[k] strokes of `order` int32[S] (real
  strokes first, as `faithfulness.ranking` gives)."""
  slots = present.shape[0]
  rank = jnp.zeros(slots, jnp.int32).at[order].set(jnp.arange(slots, dtype=jnp.int32))
  return (present[None, :] & (rank[None, :] < counts[:, None])).astype(jnp.float32)


def prefix_embeddings(embed: Embed, renderer: QueryRenderer, coverage: jax.Array,
                      masks: jax.Array) -> jax.Array:
  """Embeddings float32[K, D] of the query drawn with only the strokes of each keep mask
  float[K, S] (in the frame of the whole drawing: the canvas is not re-centred)."""
  ink = jax.vmap(lambda keep: sr.composite(coverage, keep))(masks)
  return embed(renderer.images(ink))


def spearman(order_a: jax.Array, order_b: jax.Array, present: jax.Array) -> jax.Array:
  """Spearman rank correlation of two orders int32[S] of the real strokes (each with the
  real strokes first): 1 - 6 sum d^2 / (n (n^2 - 1)); NaN when n < 2."""
  slots = present.shape[0]
  positions = jnp.arange(slots, dtype=jnp.float32)
  rank_a = jnp.zeros(slots).at[order_a].set(positions)
  rank_b = jnp.zeros(slots).at[order_b].set(positions)
  n = present.sum().astype(jnp.float32)
  d2 = jnp.sum(jnp.where(present, (rank_a - rank_b) ** 2, 0.0))
  return jnp.where(n >= 2, 1.0 - 6.0 * d2 / jnp.maximum(n * (n * n - 1.0), 1.0), jnp.nan)


def orders(attributions: dict[str, jax.Array], methods: Sequence[str], present: jax.Array,
           key: jax.Array) -> dict[str, jax.Array]:
  """{"drawing", "random", <method>...}: int32[S] orders of the real strokes; a method's is
  most positive attribution first (`faithfulness.ranking`)."""
  out = {"drawing": faithfulness.drawing_order(present),
         "random": faithfulness.random_order(key, present)}
  out.update({m: faithfulness.ranking(attributions[m], present) for m in methods})
  return out


def stroke_lengths(xy: jax.Array, lens: jax.Array, dot_length: float) -> jax.Array:
  """float32[S] ink length of each stroke of xy float[S, P, 2] (lens int[S] real points):
  its polyline length, `dot_length` for a one-point stroke, 0 for padding."""
  steps = jnp.linalg.norm(jnp.diff(xy, axis=1), axis=-1)
  real = jnp.arange(xy.shape[1] - 1)[None, :] < (lens[:, None] - 1)
  length = jnp.sum(jnp.where(real, steps, 0.0), axis=-1)
  return jnp.where(lens > 1, length, jnp.where(lens == 1, dot_length, 0.0))
