"""ZSE-SBIR explanations of one sketch-photo pair: token correspondences and patch replacement.

The paper (Lin et al., CVPR 2023, Sec. 4.4 and its figures) explains a match by the
correspondences between sketch and photo tokens and synthesises a "photo" from a sketch by
replacing every sketch patch with a photo patch; the official code has neither (spec
../shared/specs/sbir_dfsbir_and_zse.md 3.7), so what follows is our reading of the figures:

- Cross-attention matches (`cross_attention_matches`): in the CA layer (`ZseSbir.pair_logits`'
  "ca_attention_sketch" [B, h, 1 + n_s, 1 + n_p], sketch queries over photo keys, and
  "ca_attention_photo", the reverse) each patch token's strongest patch key of the other
  modality, by the head-mean attention probability. The [Ret] query row and [Ret] key column
  are left out, so a row's patch weights sum to 1 minus its weight on [Ret]. With the code's
  CA convention the weight is that of q_sketch . k_photo (the values are the sketch's own,
  spec 3.3); the correspondence is that dot product's either way.
- Kernel matches (`kernel_matches`): the strongest entries of the kernel matrix the RN reads
  (spec 3.4: cosine of each sketch anchor with each photo anchor). Anchors are the 2x2/2
  conv's cells of the token grid, or the kept tokens with token selection. With the code's
  raw `view` reshape before that conv (`ZseSbir.token_reshape="view"`, the default) every
  anchor mixes all tokens, so an anchor is not an image region: `TokenGrid.anchors_spatial`
  says whether the anchor centres mean anything.
- Patch replacement (`patch_replacement`): every sketch token's cell filled with the cell of
  the photo token most similar to it. Which similarity picks the patch is a parameter
  (`SIMILARITIES`): "sa_cosine" (default; the cosine of the two items' self-attention patch
  tokens, `ZseSbir.encode`'s "tokens" after the final LayerNorm, pair-independent) or
  "ca_attention" (the head-mean CA attention of the sketch token on the photo token, as
  above). A sketch cell whose token was dropped by token selection keeps its sketch pixels.

Token indices are row-major grid indices (row * grid + col); pixel coordinates are (x, y) of a
cell's centre in the model's input image (S x S). All functions are pure, batched over pairs
and jit-able; `explainer` wraps the model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.models import zse_attention as za
from sketchjax.models import zse_sbir
from sketchjax.methods.unit_vectors import unit

SIMILARITIES = ("sa_cosine", "ca_attention")


@dataclasses.dataclass(frozen=True)
class TokenGrid:
  """Where a ZseSbir's tokens and anchors sit in its S x S input.

  Attributes:
    grid: tokens a side (S / P, or S / 32 for the MobileNetV2 tokenizer).
    cell: pixels a token side.
    anchor_cell: pixels an anchor side (2 cells, the 2x2/2 conv), or `cell` when token
      selection makes the kept tokens the anchors.
    anchors_are_tokens: token selection is on (anchors = kept tokens).
    anchors_spatial: an anchor is an image region (False with the code's `view` reshape).
  """

  grid: int
  cell: int
  anchor_cell: int
  anchors_are_tokens: bool
  anchors_spatial: bool


def token_grid(model: zse_sbir.ZseSbir) -> TokenGrid:
  """The `TokenGrid` of `model` (from its attributes; no parameters needed)."""
  stride = model.patch_size if model.tokenizer == "vit" else 32
  grid = model.image_size // stride
  counts = [c for c in za.kept_token_counts(grid ** 2, model.keep_rates, model.num_layers)
            if c is not None]
  selects = bool(counts)
  return TokenGrid(grid, stride, stride if selects else 2 * stride, selects,
                   selects or model.token_reshape == "spatial")


def cell_centres(index: jax.Array, grid: int, cell: int) -> jax.Array:
  """Row-major cell indices int[...] of a grid x grid tiling with cells of `cell` pixels ->
  their centres float32[..., 2] as (x, y) pixels."""
  row, col = jnp.divmod(index, grid)
  return (jnp.stack([col, row], -1).astype(jnp.float32) + 0.5) * cell


def anchor_centres(tg: TokenGrid, kept: jax.Array, anchors: int) -> jax.Array:
  """(x, y) pixel centres float32[B, A, 2] of the anchors: the kept tokens' cells with token
  selection (kept int32[B, A]), else the 2x2 conv's cells (A = (grid / 2)^2, row-major)."""
  if tg.anchors_are_tokens:
    return cell_centres(kept, tg.grid, tg.cell)
  centres = cell_centres(jnp.arange(anchors), tg.grid // 2, tg.anchor_cell)
  return jnp.broadcast_to(centres, (kept.shape[0], anchors, 2))


def patch_attention(attention: jax.Array) -> jax.Array:
  """CA probabilities float32[B, h, 1 + n_q, 1 + n_k] -> head mean over patch queries and
  patch keys float32[B, n_q, n_k] (the [Ret] row and column dropped, not renormalised)."""
  return attention[:, :, 1:, 1:].mean(axis=1)


def cross_attention_matches(attention: jax.Array, kept_query: jax.Array,
                            kept_key: jax.Array) -> dict[str, jax.Array]:
  """Each query patch token's most attended key patch token in a CA layer.

  attention float32[B, h, 1 + n_q, 1 + n_k]; kept_query int32[B, n_q], kept_key int32[B, n_k]
  (grid index of each token row, `encode`'s "kept") -> {"query" int32[B, n_q] grid index of
  the query token, "key" int32[B, n_q] grid index of its most attended key token (ties: the
  lower row), "weight" float32[B, n_q] that head-mean probability}.
  """
  mean = patch_attention(attention)
  best = jnp.argmax(mean, axis=-1)
  return {"query": kept_query.astype(jnp.int32),
          "key": jnp.take_along_axis(kept_key, best, axis=-1).astype(jnp.int32),
          "weight": jnp.take_along_axis(mean, best[..., None], axis=-1)[..., 0]}


def kernel_matches(kernel: jax.Array, top_n: int) -> dict[str, jax.Array]:
  """The strongest sketch-photo anchor pairs of the kernel matrix.

  kernel float32[B, A, A'] -> {"sketch", "photo" int32[B, N] anchor indices and "value"
  float32[B, N] their cosines, the N = min(top_n, A A') largest in descending order (ties:
  lower sketch anchor, then lower photo anchor); "row_best" int32[B, A] each sketch anchor's
  best photo anchor (ties: the lower)}.
  """
  batch, a, a2 = kernel.shape
  values, flat = jax.lax.top_k(kernel.reshape(batch, a * a2), min(top_n, a * a2))
  sketch, photo = jnp.divmod(flat, a2)
  return {"sketch": sketch.astype(jnp.int32), "photo": photo.astype(jnp.int32),
          "value": values, "row_best": jnp.argmax(kernel, axis=-1).astype(jnp.int32)}


def token_cosine(sketch_tokens: jax.Array, photo_tokens: jax.Array) -> jax.Array:
  """SA tokens [B, 1 + n_s, D], [B, 1 + n_p, D] -> cosine of every sketch patch token with
  every photo patch token float32[B, n_s, n_p] ([Ret] dropped; norms floored at 1e-12)."""
  s, p = (unit(t[:, 1:]) for t in (sketch_tokens, photo_tokens))
  return jnp.einsum("bid,bjd->bij", s, p)


def to_cells(images: jax.Array, grid: int) -> jax.Array:
  """[B, S, S, C] -> [B, grid^2, S / grid, S / grid, C], cells in row-major order."""
  b, s, _, c = images.shape
  cell = s // grid
  x = images.reshape(b, grid, cell, grid, cell, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, grid * grid, cell, cell, c)


def from_cells(cells: jax.Array, grid: int) -> jax.Array:
  """`to_cells`' inverse: [B, grid^2, c, c, C] -> [B, grid c, grid c, C]."""
  b, _, cell, _, c = cells.shape
  x = cells.reshape(b, grid, grid, cell, cell, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, grid * cell, grid * cell, c)


def patch_replacement(sketch_images: jax.Array, photo_images: jax.Array,
                      similarity: jax.Array, kept_sketch: jax.Array, kept_photo: jax.Array,
                      grid: int) -> tuple[jax.Array, jax.Array]:
  """The paper's sketch-to-photo synthesis by patch replacement.

  sketch_images, photo_images [B, S, S, C]; similarity float32[B, n_s, n_p] of each kept
  sketch token with each kept photo token; kept_sketch int32[B, n_s], kept_photo int32[B, n_p]
  their grid indices -> (synthesis [B, S, S, C]: sketch cell kept_sketch[i] filled with photo
  cell source[i]; cells of dropped sketch tokens keep the sketch, source int32[B, n_s]: grid
  index of the photo cell placed at each kept sketch token (most similar; ties: lower row)).
  """
  best = jnp.argmax(similarity, axis=-1)
  source = jnp.take_along_axis(kept_photo, best, axis=-1).astype(jnp.int32)

  def one(sketch_cells, photo_cells, kept, src):
    return sketch_cells.at[kept].set(photo_cells[src])

  cells = jax.vmap(one)(to_cells(sketch_images, grid), to_cells(photo_images, grid),
                        kept_sketch, source)
  return from_cells(cells, grid), source


def explainer(model: zse_sbir.ZseSbir, *, top_n: int = 8, similarity: str = "sa_cosine"
              ) -> Callable[[Any, jax.Array, jax.Array], dict[str, jax.Array]]:
  """Jitted (params, sketches [B, S, S, 3], photos [B, S, S, 3]) -> the explanation of each
  pair (sketch i, photo i), inference mode:

    "logit", "score" float32[B]: the RN logit and its sigmoid; "ret_cosine" float32[B] the
      SA [Ret] cosine (Ours-Ret); "ca_ret_cosine" the CA [Ret] cosine;
    "sketch_kept" [B, n_s], "photo_kept" [B, n_p]: grid index of each token;
    "ca_sketch_query" / "_key" / "_weight" [B, n_s]: each sketch token's most attended photo
      token (`cross_attention_matches`); "ca_photo_*" [B, n_p]: the reverse;
    "kernel" float32[B, A, A']; "kernel_sketch" / "_photo" / "_value" [B, N] and
      "kernel_row_best" [B, A] (`kernel_matches`); "sketch_anchor_xy" / "photo_anchor_xy"
      float32[B, A, 2] (see `TokenGrid.anchors_spatial`);
    "synthesis" float32[B, S, S, 3] and "synthesis_source" int32[B, n_s]
      (`patch_replacement` by `similarity`).
  """
  if similarity not in SIMILARITIES:
    raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
  if top_n < 1:
    raise ValueError(f"top_n must be >= 1, got {top_n}")
  tg = token_grid(model)

  @jax.jit
  def explain(params, sketches, photos):
    variables = {"params": params}
    sa_s = model.apply(variables, sketches, "sketch", method=model.encode)
    sa_p = model.apply(variables, photos, "photo", method=model.encode)
    logits, aux = model.apply(variables, model.apply(variables, sa_s, "sketch",
                                                     method=model.project),
                              model.apply(variables, sa_p, "photo", method=model.project),
                              method=model.pair_logits)
    kept_s, kept_p = sa_s["kept"], sa_p["kept"]
    out = {"logit": logits, "score": aux["scores"],
           "ret_cosine": jnp.sum(unit(sa_s["ret"]) * unit(sa_p["ret"]), -1),
           "ca_ret_cosine": jnp.sum(unit(aux["ca_ret_sketch"]) * unit(aux["ca_ret_photo"]), -1),
           "sketch_kept": kept_s, "photo_kept": kept_p, "kernel": aux["kernel"]}
    for side, attention, query, key in (("sketch", aux["ca_attention_sketch"], kept_s, kept_p),
                                        ("photo", aux["ca_attention_photo"], kept_p, kept_s)):
      for name, value in cross_attention_matches(attention, query, key).items():
        out[f"ca_{side}_{name}"] = value
    for name, value in kernel_matches(aux["kernel"], top_n).items():
      out[f"kernel_{name}"] = value
    anchors = aux["kernel"].shape[1]
    out["sketch_anchor_xy"] = anchor_centres(tg, kept_s, anchors)
    out["photo_anchor_xy"] = anchor_centres(tg, kept_p, anchors)
    sim = (token_cosine(sa_s["tokens"], sa_p["tokens"]) if similarity == "sa_cosine"
           else patch_attention(aux["ca_attention_sketch"]))
    out["synthesis"], out["synthesis_source"] = patch_replacement(sketches, photos, sim, kept_s,
                                                                  kept_p, tg.grid)
    return out

  return explain


def ink_cells(sketch_images: np.ndarray, grid: int, threshold: float = 0.0,
              min_fraction: float = 0.01) -> np.ndarray:
  """Which cells of sketches in [-1, 1] (black ink on white) hold ink: bool[B, grid^2], more
  than `min_fraction` of the cell's pixels with channel mean below `threshold` (ours)."""
  dark = np.asarray(sketch_images).mean(-1, keepdims=True) < threshold
  return np.asarray(to_cells(jnp.asarray(dark, jnp.float32), grid)).mean((2, 3, 4)) > min_fraction


def central_cells(grid: int) -> np.ndarray:
  """bool[grid^2]: the cells of the central (grid / 2) x (grid / 2) block (ours: a proxy of
  "on the object" for object-centred photos such as Sketchy's)."""
  half = max(1, grid // 2)
  lo = (grid - half) // 2
  rows = np.arange(grid)
  inside = (rows >= lo) & (rows < lo + half)
  return (inside[:, None] & inside[None, :]).reshape(-1)


def pair_statistics(explanation: dict, sketch_images: np.ndarray, grid: int,
                    lines: int) -> dict[str, np.ndarray]:
  """Where the correspondences of explained pairs land (ours; numpy, per pair float64[B]).

  explanation: an `explainer` output (numpy) of B pairs; sketch_images [B, S, S, 3] in
  [-1, 1]; `lines` the strongest sketch -> photo CA matches counted (those a figure draws).
  "on object" is proxied by sketch cells holding ink (`ink_cells`) and photo cells in the
  central block (`central_cells`, for object-centred photos):
    ca_sketch_ink: share of the `lines` strongest sketch -> photo matches leaving an ink cell;
    ca_photo_central: share of them landing on a central photo cell (chance: central share);
    ca_reverse_ink: share of all photo -> sketch matches landing on an ink cell;
    ink_share: share of the sketch's cells with ink (chance level of the two ink shares);
    central_share: share of central cells;
    ca_mutual: share of sketch tokens whose match matches back (s -> p -> s);
    ca_distinct: distinct photo cells among all sketch tokens' matches over their number;
    ca_weight: mean weight of the `lines` strongest matches;
    synthesis_central: share of synthesised cells taken from central photo cells;
    synthesis_ink_central, synthesis_blank_central: the same over the sketch's ink cells and
      over its blank cells (NaN where it has none).
  """
  ink = ink_cells(sketch_images, grid)
  central = central_cells(grid)
  weight = explanation["ca_sketch_weight"]
  order = np.argsort(-weight, axis=-1, kind="stable")[:, :lines]
  query = np.take_along_axis(explanation["ca_sketch_query"], order, -1)
  key = np.take_along_axis(explanation["ca_sketch_key"], order, -1)
  rows = np.arange(len(weight))[:, None]
  # reverse[b, g]: the sketch cell that photo cell g's token matches (-1: dropped token).
  reverse = np.full((len(weight), grid * grid), -1)
  reverse[rows, explanation["ca_photo_query"]] = explanation["ca_photo_key"]
  back = reverse[rows, explanation["ca_sketch_key"]]
  distinct = [len(np.unique(k)) / len(k) for k in explanation["ca_sketch_key"]]
  from_central = central[explanation["synthesis_source"]]
  on_ink = ink[rows, explanation["sketch_kept"]]
  with np.errstate(invalid="ignore"):  # 0/0: a sketch without blank (or ink) cells
    ink_central = (from_central * on_ink).sum(-1) / on_ink.sum(-1)
    blank_central = (from_central * ~on_ink).sum(-1) / (~on_ink).sum(-1)
  return {"ca_sketch_ink": ink[rows, query].mean(-1),
          "ca_photo_central": central[key].mean(-1),
          "ca_reverse_ink": ink[rows, explanation["ca_photo_key"]].mean(-1),
          "ink_share": ink.mean(-1), "central_share": np.full(len(weight), central.mean()),
          "ca_mutual": (back == explanation["ca_sketch_query"]).mean(-1),
          "ca_distinct": np.asarray(distinct),
          "ca_weight": np.take_along_axis(weight, order, -1).mean(-1),
          "synthesis_central": from_central.mean(-1), "synthesis_ink_central": ink_central,
          "synthesis_blank_central": blank_central}
