"""Pre-LN transformer encoder matching Hugging Face `ViTEncoder` numerically.

Exact (erf) GELU, LayerNorm eps 1e-12, q/k/v projections with bias, dropout on
the attention probabilities (not broadcast) and after the attention output and
MLP projections; Dense kernels N(0, 0.02), zero bias (HF `_init_weights`).
Parameters are float32; `dtype` sets the compute precision.

HF weight names map as: `attention.attention.{query,key,value}` ->
`attention/{query,key,value}` (kernel [H, heads, head_dim]),
`attention.output.dense` -> `attention/out` (kernel [heads, head_dim, H]),
`intermediate.dense` -> `mlp_in`, `output.dense` -> `mlp_out`,
`layernorm_before` / `layernorm_after` -> `norm_attention` / `norm_mlp`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

LAYER_NORM_EPS = 1e-12
dense_init = nn.initializers.normal(0.02)
LayerNorm = functools.partial(nn.LayerNorm, epsilon=LAYER_NORM_EPS)


def head_major_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                         mask: jax.Array | None = None, dropout_rng: jax.Array | None = None,
                         dropout_rate: float = 0.0, broadcast_dropout: bool = True,
                         deterministic: bool = False, dtype: jnp.dtype | None = None,
                         force_fp32_for_softmax: bool = False) -> jax.Array:
  """`flax.linen.dot_product_attention` computed with the heads as a leading batch axis.

  q [..., Q, h, d], k and v [..., K, h, d] -> [..., Q, h, d], as flax's: scores
  q k^T / sqrt(d), masked to the dtype's minimum, softmax (in float32 with
  `force_fp32_for_softmax`), the same dropout mask (Bernoulli(1 - rate) of
  shape [..., h, Q, K] from `dropout_rng`, or [h, Q, K]-broadcast), then the
  weighted values. Only the layout differs: q, k, v are moved to [..., h, T, d]
  first, so both products are plain batched matrix products (on XLA CPU the
  inference attention takes ~2/3 of the time of flax's [..., T, h, d] einsums;
  benchmarks/sketchxainet_profile.py). Ours; the numbers are flax's within
  float32 rounding.
  """
  q, k, v = (jnp.swapaxes(a, -3, -2) for a in (query, key, value))  # [..., h, T, d]
  dtype = dtype or jnp.result_type(q, k, v)
  q, k, v = (a.astype(dtype) for a in (q, k, v))
  q = q / jnp.sqrt(q.shape[-1]).astype(dtype)
  weights = jnp.einsum("...hqd,...hkd->...hqk", q, k)
  if mask is not None:
    weights = jnp.where(mask, weights, jnp.finfo(dtype).min)
  if force_fp32_for_softmax and dtype != jnp.float32:
    weights = jax.nn.softmax(weights.astype(jnp.float32))
  else:
    weights = jax.nn.softmax(weights).astype(dtype)
  if not deterministic and dropout_rate > 0.0:
    keep_prob = 1.0 - dropout_rate
    shape = (tuple([1] * (k.ndim - 2)) + weights.shape[-2:] if broadcast_dropout
             else weights.shape)
    keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)
    weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype=dtype))
  return jnp.swapaxes(jnp.einsum("...hqk,...hkd->...hqd", weights, v), -3, -2)


class EncoderBlock(nn.Module):
  """x + Attn(LN(x)), then + MLP(LN(.)); shapes [B, T, H] -> [B, T, H].

  With `queries` = Q the block computes only the first Q tokens (attending to
  all T): [B, T, H] -> [B, Q, H], equal to the first Q rows of the full output.
  """

  hidden: int
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, attention_mask: jax.Array | None, *, train: bool,
               queries: int | None = None) -> jax.Array:
    y = LayerNorm(dtype=self.dtype, name="norm_attention")(x)
    if queries is not None:
      x = x[:, :queries]
    query_tokens = y if queries is None else y[:, :queries]
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads,
        dtype=self.dtype,
        kernel_init=dense_init,
        dropout_rate=self.attention_dropout,
        broadcast_dropout=False,
        force_fp32_for_softmax=True,
        attention_fn=head_major_attention,
        name="attention")(query_tokens, y, mask=attention_mask, deterministic=not train)
    x = x + nn.Dropout(self.dropout)(y, deterministic=not train)

    y = LayerNorm(dtype=self.dtype, name="norm_mlp")(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=dense_init, name="mlp_in")(y)
    y = nn.gelu(y, approximate=False)
    y = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=dense_init, name="mlp_out")(y)
    return x + nn.Dropout(self.dropout)(y, deterministic=not train)


class Encoder(nn.Module):
  """Stack of pre-LN blocks, optionally followed by the final LayerNorm.

  Attributes:
    num_layers: blocks.
    hidden: token width H.
    mlp_dim: MLP width.
    num_heads: attention heads (H must divide).
    dropout: hidden dropout (after attention output and MLP).
    attention_dropout: dropout on attention probabilities.
    final_norm: apply the final LayerNorm (HF `vit.layernorm`) as `final_norm`.
    dtype: compute dtype.
  """

  num_layers: int
  hidden: int
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  final_norm: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None, *, train: bool,
               first_only: bool = False) -> jax.Array:
    """float[B, T, H] tokens, optional bool[B, T] key mask (True = attend) -> [B, T, H].

    first_only: return only token 0 ([B, 1, H], e.g. a CLS readout); the last
    block then skips the other tokens' attention queries and MLP (1/L less work
    for L blocks; the result equals the full output's first token).
    """
    if x.shape[-1] != self.hidden:
      raise ValueError(f"Encoder expects tokens of width {self.hidden}, got shape {x.shape}")
    attention_mask = None if key_mask is None else key_mask[:, None, None, :]
    for i in range(self.num_layers):
      x = EncoderBlock(self.hidden, self.mlp_dim, self.num_heads, self.dropout,
                       self.attention_dropout, self.dtype,
                       name=f"block_{i}")(x, attention_mask, train=train,
                                          queries=1 if first_only and i == self.num_layers - 1
                                          else None)
    if self.final_norm:
      x = LayerNorm(dtype=self.dtype, name="final_norm")(x)
    return x
