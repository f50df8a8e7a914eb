"""ZSE-SBIR's building blocks: the self-attention (SA) encoder with EViT token selection, the
cross-attention (CA) layer with its custom LayerNorm, the 2x2 anchor conv, the kernel matrix and
the relation network (RN) head. `zse_sbir.ZseSbir` assembles them.

Official code: buptLinfy/ZSE-SBIR `model/sa.py`, `model/ca.py`, `model/rn.py`, `model/model.py`
(spec ../shared/specs/sbir_dfsbir_and_zse.md, 3.2-3.4).

SA block (`SelfAttentionBlock`, `model/sa.py::Encoder1DBlock`): pre-LN, fused-qkv attention with
bias, scale head_dim^-0.5, no dropout on the attention probabilities, dropout on the attention
output, MLP fc1 -> exact GELU -> dropout -> fc2 -> dropout. Parameter names and shapes are
`vit.EncoderBlock`'s (`attention/{query,key,value}` [D, heads, head_dim], `attention/out`
[heads, head_dim, D], `norm_attention`, `norm_mlp`, `mlp_in`, `mlp_out`), so the foundation's
`pretrained_weights` loaders fill them; the block is written out here rather than reused because
it needs the [Ret] row of the attention probabilities (token selection, explanations), the code's
dropout placement and a LayerNorm eps of our choosing.

Token selection (EViT, `keep_rate` in `model/sa.py`): at a block with keep rate r < 1, the
ceil(r * n) patch tokens with the largest head-mean [Ret] attention are kept (in their original
order) after the attention residual, before the MLP. The code's branch returns the block's
LayerNorm'd input instead of the attention output (spec 3.2, "bug if enabled"); ours uses the
attention output.

CA layer (`model/ca.py::EncoderLayer`, post-LN): H = LN'(own + Drop(MHA(q, k, v))),
out = LN'(H + Drop(FFN(H))), FFN = Linear -> ReLU -> Drop -> Linear, dropout also on the attention
probabilities, LN'(x) = a (x - mean) / (std_unbiased + 1e-6) + b (`CodeLayerNorm`). Which tokens
give q, k and v is `ZseSbir.ca_convention`'s business; the layer takes projected q/k/v so that
each item's projections can be computed once (spec 3.6); `CrossAttentionLayer.tile` runs it in
eval mode on every pair of a tile of query items x key items at once (`attend_tile`, ours).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

dense_init = nn.initializers.normal(0.02)


class CodeLayerNorm(nn.Module):
  """The CA module's LayerNorm: scale * (x - mean) / (unbiased std + eps) + bias (`ca.py`)."""

  eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (width,))
    bias = self.param("bias", nn.initializers.zeros, (width,))
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    std = jnp.sqrt(jnp.sum((x32 - mean) ** 2, -1, keepdims=True) / (width - 1))
    return (scale * (x32 - mean) / (std + self.eps) + bias).astype(self.dtype)


def _heads(features: int, heads: int, name: str, dtype: Any) -> nn.DenseGeneral:
  """Linear D -> [heads, D / heads] (kernel [D, heads, head_dim], bias [heads, head_dim])."""
  return nn.DenseGeneral((heads, features // heads), dtype=dtype, kernel_init=dense_init,
                         name=name)


def _softmax(logits: jax.Array, head_dim: int) -> jax.Array:
  """softmax(logits / sqrt(head_dim)) over the last axis, in float32."""
  return jax.nn.softmax(logits.astype(jnp.float32) / math.sqrt(head_dim), axis=-1)


def attend(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """q [B, Tq, h, d], k [B, Tk, h, d], v [B, Tk, h, d] -> (probabilities
  P = softmax(q k^T / sqrt d) float32[B, h, Tq, Tk], P v [B, Tq, h, d]); softmax in float32."""
  probs = _softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), q.shape[-1])
  return probs, jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


def attend_tile(q: jax.Array, k: jax.Array, v: jax.Array, value_of: str) -> jax.Array:
  """`attend`'s P v for every pair (query item a, key item b) of a tile, without copying q, k
  or v per pair (ours): q [A, T, h, d], k [B, Tk, h, d], v [A, Tk, h, d] (value_of="query":
  the query item's own values, the code's CA convention) or [B, Tk, h, d] ("key": the key
  item's, the figure's) -> [A, B, T, h, d], equal to `attend(q[a], k[b], v[a or b])[1]`.

  Each head's logits are one product of all A*T queries with all B*Tk keys, laid out so that
  its P v is one product per value item (batched over head and value item, the head-major
  layout XLA CPU runs fastest; `attend` on repeated pairs is a batch of A*B small products)."""
  if value_of not in ("query", "key"):
    raise ValueError(f"value_of must be 'query' or 'key', got {value_of!r}")
  if value_of == "query" and v.shape[1] != k.shape[1]:
    raise ValueError(f"value_of='query' needs as many values as keys, got {v.shape[1]} values "
                     f"and {k.shape[1]} keys")
  if value_of == "query":
    probs = _softmax(jnp.einsum("aqhd,bkhd->haqbk", q, k), q.shape[-1]).astype(v.dtype)
    return jnp.einsum("haqbk,akhd->haqbd", probs, v).transpose(1, 3, 2, 0, 4)
  probs = _softmax(jnp.einsum("aqhd,bkhd->hbaqk", q, k), q.shape[-1]).astype(v.dtype)
  return jnp.einsum("hbaqk,bkhd->hbaqd", probs, v).transpose(2, 1, 3, 0, 4)


class SelfAttentionBlock(nn.Module):
  """One pre-LN ViT block of `model/sa.py`, with optional EViT token selection.

  Attributes: hidden D, mlp_dim, num_heads, dropout (attention output and MLP), ln_eps, dtype.
  """

  hidden: int
  mlp_dim: int
  num_heads: int
  dropout: float = 0.1
  ln_eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, keep: int | None, *,
               train: bool) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """x [B, 1 + n, D], keep (patch tokens to keep, None: all) -> (x' [B, 1 + keep, D],
    kept rows of the n patch tokens int32[B, keep] in increasing order (None without
    selection), [Ret] attention float32[B, n] (head mean of the [Ret] query row))."""
    y = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name="norm_attention")(x)
    attention = _Projections(self.hidden, self.num_heads, self.dtype, name="attention")
    probs, out = attend(*(attention.project(part, y) for part in ("query", "key", "value")))
    out = attention.output(out)
    x = x + nn.Dropout(self.dropout)(out, deterministic=not train)
    ret_attention = probs[:, :, 0, 1:].mean(axis=1)
    kept = None
    if keep is not None and keep < x.shape[1] - 1:
      # top_k is stable (ties: lower index first); sorting the indices keeps the token order.
      kept = jnp.sort(jax.lax.top_k(ret_attention, keep)[1], axis=-1)
      patches = jnp.take_along_axis(x[:, 1:], kept[..., None], axis=1)
      x = jnp.concatenate([x[:, :1], patches], axis=1)
    y = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name="norm_mlp")(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=dense_init, name="mlp_in")(y)
    y = nn.Dropout(self.dropout)(nn.gelu(y, approximate=False), deterministic=not train)
    y = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=dense_init, name="mlp_out")(y)
    return x + nn.Dropout(self.dropout)(y, deterministic=not train), kept, ret_attention


class _Projections(nn.Module):
  """query/key/value [D, heads, head_dim] and out [heads, head_dim, D] linears, with bias."""

  hidden: int
  num_heads: int
  dtype: Any = jnp.float32

  def setup(self):
    self.query = _heads(self.hidden, self.num_heads, "query", self.dtype)
    self.key = _heads(self.hidden, self.num_heads, "key", self.dtype)
    self.value = _heads(self.hidden, self.num_heads, "value", self.dtype)
    self.out = nn.DenseGeneral(self.hidden, axis=(-2, -1), dtype=self.dtype,
                               kernel_init=dense_init, name="out")

  def project(self, part: str, x: jax.Array) -> jax.Array:
    """x [B, T, D] -> [B, T, heads, head_dim] through the `part` linear."""
    return {"query": self.query, "key": self.key, "value": self.value}[part](x)

  def output(self, heads: jax.Array) -> jax.Array:
    """[B, T, heads, head_dim] -> [B, T, D]."""
    return self.out(heads)


def kept_token_counts(num_patches: int, keep_rates: tuple[float, ...] | None,
                      num_layers: int) -> tuple[int | None, ...]:
  """Patch tokens kept after each block (None: no selection there): ceil(rate * n) as the
  code's `math.ceil(keep_rate * left_tokens)`; 196 with the paper's schedule -> 177, 160, 144."""
  if keep_rates is None:
    return (None,) * num_layers
  if len(keep_rates) != num_layers or not all(0 < r <= 1 for r in keep_rates):
    raise ValueError(f"keep_rates needs {num_layers} rates in (0, 1], got {keep_rates}")
  counts, n = [], num_patches
  for rate in keep_rates:
    if rate < 1:
      n = math.ceil(rate * n)
      counts.append(n)
    else:
      counts.append(None)
  return tuple(counts)


class SelfAttentionEncoder(nn.Module):
  """`num_layers` SelfAttentionBlocks then the final LayerNorm (`encoder_norm`).

  Attributes: num_layers, hidden, mlp_dim, num_heads, dropout, ln_eps, keep_rates (one per
  block, or None for no selection), dtype.
  """

  num_layers: int
  hidden: int
  mlp_dim: int
  num_heads: int
  dropout: float = 0.1
  ln_eps: float = 1e-6
  keep_rates: tuple[float, ...] | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """x [B, 1 + n, D] (with position embeddings) -> {"tokens" [B, 1 + n', D] after the final
    LayerNorm, "kept" int32[B, n'] the original patch index of each output token (row-major
    on the patch grid), "ret_attention" float32[B, layers, n] head-mean [Ret] attention of
    each block over its input tokens (zero beyond the block's token count)}."""
    batch, n = x.shape[0], x.shape[1] - 1
    kept = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (batch, n))
    maps = []
    counts = kept_token_counts(n, self.keep_rates, self.num_layers)
    for i, keep in enumerate(counts):
      x, rows, ret_attention = SelfAttentionBlock(
          self.hidden, self.mlp_dim, self.num_heads, self.dropout, self.ln_eps, self.dtype,
          name=f"block_{i}")(x, keep, train=train)
      maps.append(jnp.pad(ret_attention, ((0, 0), (0, n - ret_attention.shape[1]))))
      if rows is not None:
        kept = jnp.take_along_axis(kept, rows, axis=1)
    tokens = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name="final_norm")(x)
    return {"tokens": tokens, "kept": kept, "ret_attention": jnp.stack(maps, axis=1)}


class CrossAttentionLayer(nn.Module):
  """One post-LN CA `EncoderLayer` of `model/ca.py` on projected q/k/v (see module doc).

  Attributes: hidden D, num_heads, mlp_dim (d_ff), dropout, dtype.
  """

  hidden: int
  num_heads: int = 8
  mlp_dim: int = 1024
  dropout: float = 0.1
  dtype: Any = jnp.float32

  def setup(self):
    self.attention = _Projections(self.hidden, self.num_heads, self.dtype)
    self.norm_attention = CodeLayerNorm(dtype=self.dtype)
    self.ffn_in = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=dense_init)
    self.ffn_out = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=dense_init)
    self.norm_ffn = CodeLayerNorm(dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)

  def project(self, part: str, x: jax.Array) -> jax.Array:
    """Tokens [B, T, D] -> the `part` ("query", "key", "value") projection [B, T, h, d]."""
    return self.attention.project(part, x)

  def __call__(self, residual: jax.Array, q: jax.Array, k: jax.Array, v: jax.Array, *,
               train: bool) -> tuple[jax.Array, jax.Array]:
    """residual [B, T, D], q [B, T, h, d], k and v [B, T', h, d] -> (output [B, T, D],
    attention probabilities float32[B, h, T, T'] before dropout)."""
    probs, _ = attend(q, k, v)
    dropped = self.drop(probs, deterministic=not train).astype(v.dtype)
    heads = jnp.einsum("bhqk,bkhd->bqhd", dropped, v)
    return self._output(residual, heads, train=train), probs

  def tile(self, residual: jax.Array, q: jax.Array, k: jax.Array, v: jax.Array, *,
           value_of: str) -> jax.Array:
    """Eval mode (no dropout), every pair (query item a, key item b) at once: residual
    [A, T, D] and q [A, T, h, d] of the query items, k [B, Tk, h, d] of the key items, v of
    the query items [A, Tk, h, d] (value_of="query") or of the key items [B, Tk, h, d] ("key")
    -> output [A, B, T, D], pair (a, b) equal to `__call__` on (residual[a], q[a], k[b],
    v[a or b]) (`attend_tile`)."""
    heads = attend_tile(q, k, v, value_of)
    return self._output(residual[:, None], heads, train=False)

  def _output(self, residual: jax.Array, heads: jax.Array, *, train: bool) -> jax.Array:
    """Residual [..., T, D] and the attention's P v [..., T, h, d] -> the layer's output
    [..., T, D]: out projection, residual, LN', FFN, residual, LN'."""
    a = self.attention.output(heads)
    h = self.norm_attention(residual + self.drop(a, deterministic=not train))
    f = self.ffn_out(self.drop(nn.relu(self.ffn_in(h)), deterministic=not train))
    return self.norm_ffn(h + self.drop(f, deterministic=not train))


def kernel_matrix(sketch: jax.Array, photo: jax.Array) -> jax.Array:
  """Cosine of every sketch anchor with every photo anchor: [B, A, C], [B, A', C] ->
  float32[B, A, A'] (`rn.py::cos_similar`: no eps, 0/0 -> 0). Zero-norm anchors give 0 with
  finite gradients (the code's NaN -> 0, without NaN in the backward pass)."""
  s, p = sketch.astype(jnp.float32), photo.astype(jnp.float32)
  ss, sp = jnp.sum(s * s, -1), jnp.sum(p * p, -1)
  ok = (ss > 0)[:, :, None] & (sp > 0)[:, None, :]
  # sqrt of 1 where a norm is 0, so that neither branch of the where has a NaN gradient.
  ns, np_ = jnp.sqrt(jnp.where(ss > 0, ss, 1.0)), jnp.sqrt(jnp.where(sp > 0, sp, 1.0))
  dots = jnp.einsum("bic,bjc->bij", s, p)
  return jnp.where(ok, dots / ns[:, :, None] / np_[:, None, :], 0.0)


def rn_widths(anchors: int) -> tuple[int, int]:
  """Hidden widths of the RN for A anchors: (A * sqrt(A), A), the code's (343, 49), (1728, 144)
  and (2744, 196) (`rn.py`); rounded for a non-square A."""
  return round(anchors ** 1.5), anchors


class RelationHead(nn.Module):
  """Flattened kernel matrix [B, A * A'] -> Linear -> ReLU -> Drop -> Linear -> ReLU -> Drop ->
  Linear(1): the logit float32[B] before the code's sigmoid."""

  anchors: int
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, flat: jax.Array, *, train: bool) -> jax.Array:
    x = flat
    for i, width in enumerate(rn_widths(self.anchors)):
      x = nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(x)
      x = nn.Dropout(self.dropout)(nn.relu(x), deterministic=not train)
    return nn.Dense(1, dtype=self.dtype, name="logit")(x)[:, 0].astype(jnp.float32)
