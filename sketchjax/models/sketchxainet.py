"""SketchXAINet: a stroke-level transformer classifier (SketchXAI, CVPR 2023; spec A.2).

Every stroke slot becomes one token, the sum of
  shape    = BiLSTM over the stroke's (dx, dy, 1-p, p) rows, summed over time
             (exactly 0 for an empty slot),
  location = Dense(2, H) of the stroke's absolute first point (an empty slot
             gets just the bias, as in the official model),
  order    = Embed(max_strokes, H) row of the slot index (added to every slot);
a learned CLS token (no order or location) is prepended, the sequence goes
through a pre-LN ViT encoder with a final LayerNorm, and a Dense head reads the
CLS output.

Parameter count: Tiny with 345 classes has 5,743,257 parameters, the official
5,744,793 less 1,536: PyTorch's LSTM keeps two bias vectors (b_ih, b_hh) per
direction and layer that only ever appear summed; we keep one (their sum when
converting), 4 * 96 fewer per direction and layer.

Official checkpoint names map as: `vit.embeddings.stroke_embeddings` ->
`stroke_shape/layer_{l}` (see bilstm.py), `vit.embeddings.location_embeddings`
-> `location`, `vit.embeddings.order_embeddings` -> `order/embedding`,
`vit.embeddings.cls_token` -> `cls_token`, `vit.encoder.layer.{i}` ->
`encoder/block_{i}` (see vit.py), `vit.layernorm` -> `encoder/final_norm`,
`vit.fc` -> `head`.

The batch is the tokeniser's dict (`sketchjax.data.tokenize`):
  stroke_len int32[B, S], loc float32[B, S, 2], and the strokes' rows as
  points float32[B, S, P, 4] and/or packed_points float32[D, R, L, 4] with
  packed_index int32[D, R, L, 2] (see `shape_embeddings`; the packed rows are
  used when present), or their precomputed shape embeddings
  shape_embedding float32[B, S, H] (`with_shape_embeddings`: the encoder then
  does not run, e.g. inside an inversion loop that only moves locations).
Any S <= max_strokes and any P work.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sketchjax.models.bilstm import StrokeShapeEncoder, reduce_by_stroke
from sketchjax.models.vit import Encoder

trunc_normal_init = nn.initializers.truncated_normal(0.02)


def shape_embeddings(encoder: StrokeShapeEncoder,
                     points: jax.Array | None,
                     stroke_len: jax.Array,
                     packed_points: jax.Array | None = None,
                     packed_index: jax.Array | None = None) -> jax.Array:
  """Runs the shape encoder over the strokes -> float32[B, S, H] (empty slots 0).

  Args:
    encoder: the bound StrokeShapeEncoder.
    points: float32[B, S, P, 4], one stroke a slot (unused, may be None, when
      the packed rows are given).
    stroke_len: int[B, S].
    packed_points: optional float32[D, R, L, 4]: the same strokes laid back to
      back in rows, per each of D consecutive shards of B / D sketches.
    packed_index: int32[D, R, L, 2] (sketch within shard, slot) of every packed
      point; padding has sketch index >= B / D. With the packed rows the
      encoder does no work on padding, and the per-shard reduction is vmapped
      over D so each data shard's work stays on its device under SPMD.
      Without them the encoder runs over all B * S slots.
  """
  batch, slots = stroke_len.shape
  if packed_points is None:
    flat = encoder(points.reshape((batch * slots,) + points.shape[2:]),
                   stroke_len.reshape(batch * slots))
    return flat.reshape(batch, slots, -1)

  shards, rows, row_length, features = packed_points.shape
  if batch % shards:
    raise ValueError(f"the packed rows have {shards} shards, which do not divide the "
                     f"batch of {batch}")
  per_shard = batch // shards
  sketch, slot = packed_index[..., 0], packed_index[..., 1]
  stroke_id = jnp.where(sketch < per_shard, sketch * slots + slot, -1)  # [D, R, L]
  outputs = encoder.point_outputs(packed_points.reshape(shards * rows, row_length, features),
                                  stroke_id.reshape(shards * rows, row_length), shards)
  outputs = outputs.reshape(shards, rows, row_length, -1)
  per_stroke = jax.vmap(lambda o, i: reduce_by_stroke(o, i, per_shard * slots, encoder.reduce))(
      outputs, stroke_id)  # [D, per_shard * S, H]
  return per_stroke.reshape(batch, slots, -1)


class SketchXAINet(nn.Module):
  """Stroke transformer classifier.

  Attributes:
    num_classes: output classes.
    hidden: token width H (192 Tiny, 768 Base).
    num_layers: encoder blocks.
    num_heads: attention heads.
    mlp_dim: encoder MLP width.
    max_strokes: rows of the order embedding (196); S must not exceed it.
    dropout: embedding and hidden dropout.
    attention_dropout: attention-probability dropout.
    use_shape, use_location, use_order: ablation switches; a disabled term is
      dropped from the token sum and has no parameters.
    mask_padding: False (official): empty slots are attended like real ones.
      True: empty slots' tokens are zero and masked as attention keys (CLS
      always visible), so the output does not depend on S.
    dtype: encoder compute dtype (parameters, the BiLSTM and the logits stay float32).
  """

  num_classes: int
  hidden: int = 192
  num_layers: int = 12
  num_heads: int = 3
  mlp_dim: int = 768
  max_strokes: int = 196
  dropout: float = 0.1
  attention_dropout: float = 0.1
  use_shape: bool = True
  use_location: bool = True
  use_order: bool = True
  mask_padding: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
               logits_only: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch dict -> (logits float32[B, C], intermediates).

    Intermediates: shape_embedding [B, S, H], stroke_tokens [B, S, H] (the
    token sum before CLS), encoded [B, 1 + S, H] (after the final LayerNorm),
    cls [B, H], logits [B, C]. With `logits_only` the last encoder block
    computes the CLS token alone (the logits are the same, ~1/12 less work for
    12 blocks: for loops that read only the logits, as SLI and attribution do)
    and `encoded` is [B, 1, H].
    """
    stroke_len, loc = batch["stroke_len"], batch["loc"]
    num_sketches, slots = stroke_len.shape
    if slots > self.max_strokes:
      raise ValueError(f"batch has {slots} stroke slots, the model at most {self.max_strokes}")
    slot_mask = stroke_len > 0

    shape = jnp.zeros((num_sketches, slots, self.hidden), jnp.float32)
    if self.use_shape and "shape_embedding" in batch:
      shape = batch["shape_embedding"]
    elif self.use_shape:
      encoder = StrokeShapeEncoder(self.hidden, name="stroke_shape")
      shape = shape_embeddings(encoder, batch.get("points"), stroke_len, batch.get("packed_points"),
                               batch.get("packed_index"))
    tokens = shape
    if self.use_location:
      tokens = tokens + nn.Dense(self.hidden, kernel_init=trunc_normal_init,
                                 name="location")(loc.astype(jnp.float32))
    if self.use_order:
      order = nn.Embed(self.max_strokes, self.hidden,
                       embedding_init=nn.initializers.normal(1.0), name="order")
      tokens = tokens + order(jnp.arange(slots))[None]
    key_mask = None
    if self.mask_padding:
      tokens = jnp.where(slot_mask[..., None], tokens, 0)
      key_mask = jnp.concatenate([jnp.ones((num_sketches, 1), bool), slot_mask], axis=1)

    cls_token = self.param("cls_token", trunc_normal_init, (1, 1, self.hidden))
    x = jnp.concatenate([jnp.broadcast_to(cls_token, (num_sketches, 1, self.hidden)), tokens], 1)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    encoded = Encoder(self.num_layers, self.hidden, self.mlp_dim, self.num_heads, self.dropout,
                      self.attention_dropout, final_norm=True, dtype=self.dtype,
                      name="encoder")(x, key_mask, train=train, first_only=logits_only)
    cls = encoded[:, 0].astype(jnp.float32)
    logits = nn.Dense(self.num_classes, kernel_init=trunc_normal_init, name="head")(cls)
    return logits, {"shape_embedding": shape, "stroke_tokens": tokens, "encoded": encoded,
                    "cls": cls, "logits": logits}


def tiny(num_classes: int, **kwargs: Any) -> SketchXAINet:
  """SketchXAINet-Tiny: H 192, 3 heads, MLP 768, 12 layers."""
  return SketchXAINet(num_classes, hidden=192, num_heads=3, mlp_dim=768, num_layers=12, **kwargs)


def base(num_classes: int, **kwargs: Any) -> SketchXAINet:
  """SketchXAINet-Base: H 768, 12 heads, MLP 3072, 12 layers."""
  return SketchXAINet(num_classes, hidden=768, num_heads=12, mlp_dim=3072, num_layers=12,
                      **kwargs)


def with_shape_embeddings(model: SketchXAINet, params: Mapping[str, Any],
                          batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The batch with its strokes replaced by their shape embeddings [B, S, H].

  The embeddings are exactly what `model` computes from the strokes (packed
  rows when the batch has them); the returned batch holds `shape_embedding`
  instead of points / packed rows, so `model.apply` on it skips the BiLSTM.
  Returns the batch unchanged but for the strokes when the model has no shape
  term.
  """
  out = {k: v for k, v in batch.items()
         if k not in ("points", "packed_points", "packed_index")}
  if model.use_shape:
    encoder = StrokeShapeEncoder(model.hidden).bind({"params": params["stroke_shape"]})
    out["shape_embedding"] = shape_embeddings(encoder, batch.get("points"), batch["stroke_len"],
                                              batch.get("packed_points"),
                                              batch.get("packed_index"))
  return out
