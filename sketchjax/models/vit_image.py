"""Image ViT: patch embedding, [CLS] token, learned position embeddings, the project's encoder.

The layout of Google's ViT (google-research/vision_transformer, big_vision)
and timm's `vit_*_patch16_*`: a PxP/P conv embeds the patches (row-major to N
tokens), a learned [CLS] token is prepended, learned position embeddings
[1, 1 + N, D] are added, then pre-LN blocks and a final LayerNorm; the [CLS]
token's output is the image feature. The blocks are `vit.Encoder`'s, whose
parameters have the shapes of Google's (`attention/query/kernel` [D, heads,
head_dim], `out/kernel` [heads, head_dim, D]), so `pretrained_weights` loads
Google's `.npz` and timm's safetensors into them.

Two numerical differences from the publishers' code, both from `vit.Encoder`:
LayerNorm eps is 1e-12 (Google and timm: 1e-6; relative change ~1e-6 / token
variance, below float32 rounding for trained activations) and GELU is exact
(erf) as in timm, where Google's Flax code uses the tanh approximation (up to
~5e-4 per activation).

Input: float[B, H, W, 3] in [-1, 1] (the normalisation of Google's and timm's
augreg weights), H and W multiples of the patch size.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sketchjax.models import vit


class ImageViT(nn.Module):
  """ViT image encoder.

  Attributes:
    patch_size: side P of the square patches (pixels).
    hidden: token width D.
    num_layers: encoder blocks.
    num_heads: attention heads (D must divide).
    mlp_dim: MLP width.
    num_classes: width of a linear head on the [CLS] output; None for no head.
    dropout: dropout after the position embeddings, attention output and MLP.
    dtype: compute dtype (parameters stay float32).
  """

  patch_size: int
  hidden: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  num_classes: int | None = None
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """float[B, H, W, 3] -> (cls [B, D], or logits [B, num_classes] with a head;
    {"tokens": [B, 1 + N, D] after the final LayerNorm, "cls": [B, D], "logits" with a head}),
    N = (H / P) * (W / P). With train=True and dropout > 0 a "dropout" rng is needed."""
    p = self.patch_size
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] % p or images.shape[2] % p:
      raise ValueError(f"ImageViT expects images [B, H, W, 3] with H, W multiples of {p}, "
                       f"got shape {images.shape}")
    x = nn.Conv(self.hidden, (p, p), (p, p), padding="VALID", dtype=self.dtype,
                name="patch_embed")(images)
    batch = x.shape[0]
    x = x.reshape(batch, -1, self.hidden)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.hidden))
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.hidden)).astype(x.dtype), x], 1)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1,) + x.shape[1:])
    x = nn.Dropout(self.dropout)(x + pos.astype(x.dtype), deterministic=not train)
    tokens = vit.Encoder(self.num_layers, self.hidden, self.mlp_dim, self.num_heads,
                         dropout=self.dropout, dtype=self.dtype, name="encoder")(x, train=train)
    out = {"tokens": tokens, "cls": tokens[:, 0]}
    if self.num_classes is None:
      return out["cls"], out
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                      name="head")(out["cls"])
    out["logits"] = logits
    return logits, out


def vit_b16(num_classes: int | None = None, **kwargs) -> ImageViT:
  """ViT-B/16: D 768, 12 layers, 12 heads, MLP 3072 (86,567,656 parameters at 224 px with
  the 1000-way head)."""
  return ImageViT(patch_size=16, hidden=768, num_layers=12, num_heads=12, mlp_dim=3072,
                  num_classes=num_classes, **kwargs)


def vit_small(num_classes: int | None = None, **kwargs) -> ImageViT:
  """A CPU-sized ViT with 16-pixel patches: D 192, 4 layers, 3 heads, MLP 768."""
  return ImageViT(patch_size=16, hidden=192, num_layers=4, num_heads=3, mlp_dim=768,
                  num_classes=num_classes, **kwargs)


def resize_pos_embed(pos_embed: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """[1, 1 + n*n, D] position embeddings of a square n x n patch grid -> [1, 1 + gh*gw, D]
  for grid = (gh, gw).

  The [CLS] embedding is kept; the grid's are resized bilinearly (half-pixel
  centres, edges clamped; `jax.image.resize`, antialiased when shrinking).
  """
  side = round((pos_embed.shape[1] - 1) ** 0.5) if pos_embed.ndim == 3 else 0
  if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or side * side != pos_embed.shape[1] - 1:
    raise ValueError(f"resize_pos_embed expects [1, 1 + n*n, D] embeddings of a square grid, "
                     f"got shape {pos_embed.shape}")
  if (side, side) == tuple(grid):
    return pos_embed
  width = pos_embed.shape[-1]
  cells = pos_embed[0, 1:].reshape(side, side, width)
  cells = jax.image.resize(cells, (*grid, width), "bilinear").reshape(1, -1, width)
  return jnp.concatenate([pos_embed[:, :1], cells.astype(pos_embed.dtype)], axis=1)
