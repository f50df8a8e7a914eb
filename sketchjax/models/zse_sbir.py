"""ZSE-SBIR (Lin et al., "Zero-Shot Everything Sketch-Based Image Retrieval, and in Explainable
Style", CVPR 2023): a ViT with a learnable tokenizer and a [Ret] token (SA), sketch/photo
cross-attention (CA), and a kernel-based relation network (RN) scoring a sketch-photo pair.

Faithful to the official code (buptLinfy/ZSE-SBIR at 88f87f7; spec
../shared/specs/sbir_dfsbir_and_zse.md, 3.2-3.4, 3.6, 3.8), with switches where the paper's figure
or our judgement differs. Defaults are the code's:

- tokenizer: (PatchEmbed(x) + ConvStem(x)) / 2 for both modalities, as the code (one SA on
  cat(sk, im)). `conv_stem="sketch"`: photos get PatchEmbed only (a plain ViT), as the paper's
  figure draws it (a "Linear" photo path; the authors' best setting).
- token selection: off, as the code (`keep_rate = (1,)*12`). `keep_rates=PAPER_KEEP_RATES`: the
  paper's EViT setting, 90% kept at blocks 4, 7 and 10 (196 -> 177 -> 160 -> 144); the kept
  tokens then go straight to the kernel matrix (no 2x2 conv: 144 anchors, the code's `anchor=144`
  RN 20736 -> 1728 -> 144 -> 1). The selection itself is fixed (ours; `zse_attention`).
- CA Q/K/V: the code's: sketch side Q sketch, K photo, V sketch (photo side mirrored), residual
  on V. `ca_convention="figure"`: Q own, K and V the other modality's (the figure's Q_i with K_s,
  V_s), residual on the own (query) tokens (ours: the figure does not say).
- CA LayerNorm: the code's a (x - mean) / (unbiased std + 1e-6) + b, post-LN.
- before the 2x2 conv: the code's raw `view(B, D, g, g)` of the [B, g*g, D] tokens (each
  "channel" mixes all tokens). `token_reshape="spatial"`: reshape to [B, g, g, D] (ours, the
  evident intent).
- kernel matrix: the code's cosine of 49 x 49 anchors (512-d), 0/0 -> 0; ours keeps the
  gradients of zero anchors finite.
- RN: the code's 2401 -> 343 -> 49 -> 1 with ReLU and dropout; we return the logit before the
  sigmoid (fp32 ranking, spec 3.6) and the sigmoid as "scores".

Other differences from the code, all ours: the convolutions (conv stem, patch embedding, anchor
conv) compute their weight gradients as products (`loop_conv`; XLA CPU's own is 14-46x slower
inside the training step's micro-batch loop); the SA LayerNorm eps is `sa_ln_eps` (1e-6, the
eps Google's ViT-B/16 .npz was trained with; the code's torch LayerNorm uses 1e-5); parameter
initialisation is Flax's (N(0, 0.02) linears) rather than torch's defaults; the code's unused
third copy of the CA layer (`ca.py::Encoder.layers`, 3,940,096 parameters) is not built, so
ViT-B/16 has 98,240,536 parameters here against the official model's 102,180,632. Only N = 1
CA layer exists (the code's `args.number`), which is what makes each item's CA projections
cacheable.

Uses: `apply(v, sketches, photos, train=...)` for training (pairs sketch i with photo i; the
code's batch is sketches [s; s-], photos [p+; p-]); for ranking, each item's SA features once
(`method=ZseSbir.encode`), each item's CA projections once (`method=ZseSbir.project`; spec 3.6:
sketch W_q1, W_v1, W_k2, photo W_k1, W_q2, W_v2), then `method=ZseSbir.pair_logits` on any
pairing of the two; the three steps give the same numbers as `__call__`. In eval mode,
`method=ZseSbir.pair_logits_tile` scores every pair of t sketches x c photos at once (the same
numbers, the CA attention per head over the whole tile; the ranking's path).

CPU-sized variants keep every component: `zse_small` (a 192-wide, 4-block ViT tokenizer and SA)
and `zse_mobilenet` (tokens from the ImageNet MobileNetV2 feature map, linearly projected and
averaged with a stride-32 conv stem, then a small SA, CA and RN).

Inputs: float[B, S, S, 3] in [-1, 1] (the code's Normalize(0.5, 0.5)), S = `image_size`.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sketchjax.models import loop_conv, mobilenet_v2, pretrained_weights
from sketchjax.models import zse_attention as za

Variables = dict[str, Any]
Features = dict[str, jax.Array]

PAPER_KEEP_RATES = (1, 1, 1, 0.9, 1, 1, 0.9, 1, 1, 0.9, 1, 1)
OFFICIAL_PARAMS = 102_180_632     # the official Model, counted in torch (see tests)
UNUSED_CA_COPY_PARAMS = 3_940_096  # ca.py's dead `Encoder.layers` clone, not built here
VIT_KEYS = ("patch_embed", "cls", "pos_embed", "encoder")  # the SA params a ViT file fills


class ConvStem(nn.Module):
  """The learnable tokenizer's conv branch (`rn.py::Scale_Embedding`): conv 7x7/2 (pad 3), then
  3x3/2 convs (pad 1), ReLU between, none after the last, no biases; [B, H, W, 3] ->
  [B, H / 2^k, W / 2^k, features[-1]] for k = len(features)."""

  features: tuple[int, ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.features):
      k, pad = (7, 3) if i == 0 else (3, 1)
      x = nn.Conv(width, (k, k), 2, padding=((pad, pad), (pad, pad)), use_bias=False,
                  dtype=self.dtype, conv_general_dilated=loop_conv.conv_general_dilated,
                  name=f"conv_{i}")(x)
      if i < len(self.features) - 1:
        x = nn.relu(x)
    return x


class MobileNetFeatures(nn.Module):
  """MobileNetV2-1.0's conv body in the BN-folded form of the ImageNet TFLite weights (names
  `stem`, `block0..16`, `head` as `mobilenet_v2.MobileNetV2`): [B, H, W, 3] -> [B, H/32, W/32,
  1280], the feature map after the last ReLU6."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = mobilenet_v2.ConvUnit(mobilenet_v2.STEM_CHANNELS, 3, 2, dtype=self.dtype,
                              name="stem")(x, False)
    for i, (_, expansion, features, stride) in enumerate(mobilenet_v2.block_specs()):
      x = mobilenet_v2.InvertedResidual(expansion, features, stride, dtype=self.dtype,
                                        name=f"block{i}")(x, False)
    return mobilenet_v2.ConvUnit(mobilenet_v2.HEAD_CHANNELS, dtype=self.dtype,
                                 name="head")(x, False)


class SelfAttention(nn.Module):
  """Tokenizer, [Ret] token, position embeddings and the SA encoder (`model/sa.py::ViTPatch`)."""

  tokenizer: str
  patch_size: int
  hidden: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  stem_features: tuple[int, ...]
  keep_rates: tuple[float, ...] | None
  dropout: float
  ln_eps: float
  freeze_mobilenet: bool
  dtype: Any

  @nn.compact
  def __call__(self, images: jax.Array, use_stem: bool, *, train: bool) -> Features:
    if self.tokenizer == "vit":
      p = self.patch_size
      x = nn.Conv(self.hidden, (p, p), (p, p), padding="VALID", dtype=self.dtype,
                  conv_general_dilated=loop_conv.conv_general_dilated,
                  name="patch_embed")(images)
    else:
      x = MobileNetFeatures(self.dtype, name="mobilenet")(images)
      if self.freeze_mobilenet:  # no gradient into the body: XLA then skips its backward pass
        x = jax.lax.stop_gradient(x)
      x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=za.dense_init,
                   name="token_proj")(x)
    if use_stem:
      stem = ConvStem((*self.stem_features, self.hidden), self.dtype, name="conv_stem")
      x = (x + stem(images)) / 2
    batch = x.shape[0]
    x = x.reshape(batch, -1, self.hidden)  # row-major, as `rearrange(b c h w -> b (h w) c)`
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.hidden))
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.hidden)).astype(x.dtype), x], 1)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1,) + x.shape[1:])
    x = nn.Dropout(self.dropout)(x + pos.astype(x.dtype), deterministic=not train)
    return za.SelfAttentionEncoder(self.num_layers, self.hidden, self.mlp_dim, self.num_heads,
                                   self.dropout, self.ln_eps, self.keep_rates, self.dtype,
                                   name="encoder")(x, train=train)


class ZseSbir(nn.Module):
  """The ZSE-SBIR network (module doc for the switches and what each is).

  Attributes:
    tokenizer: "vit" (PxP patch embedding) or "mobilenet_v2" (ImageNet MobileNetV2 feature map,
      stride 32, + a linear projection).
    image_size: input side S (grid S / P, or S / 32; even without token selection).
    patch_size: P of the "vit" tokenizer.
    hidden, num_layers, num_heads, mlp_dim: the SA ViT (ViT-B/16: 768, 12, 12, 3072).
    stem_features: widths of the conv stem's convs before the last (to `hidden`); one conv per
      halving of the side: 4 convs for P = 16, 5 for MobileNetV2.
    conv_stem: "both" (code) or "sketch" (figure): which modality's tokenizer has the conv stem.
    keep_rates: EViT keep rate per SA block, None (code) for all tokens.
    ca_heads, ca_mlp_dim: the CA layer (8 heads, d_ff 1024).
    ca_convention: "code" or "figure" (which tokens give K and V).
    token_reshape: "view" (code) or "spatial": the tokens' layout before the 2x2 conv.
    rn_dim: channels of the 2x2 conv (the anchors' width; "RD = 512").
    dropout: every dropout rate (0.1 in the code).
    sa_ln_eps: LayerNorm eps of the SA blocks.
    freeze_mobilenet: "mobilenet_v2" tokenizer: stop gradients at its feature map (the
      ImageNet body stays fixed and its backward pass, ~10x the CPU time of the rest of
      `zse_mobilenet`'s step, is skipped).
    dtype: compute dtype (parameters float32; logits and kernel matrix float32).
  """

  tokenizer: str = "vit"
  image_size: int = 224
  patch_size: int = 16
  hidden: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  stem_features: tuple[int, ...] = (64, 128, 256)
  conv_stem: str = "both"
  keep_rates: tuple[float, ...] | None = None
  ca_heads: int = 8
  ca_mlp_dim: int = 1024
  ca_convention: str = "code"
  token_reshape: str = "view"
  rn_dim: int = 512
  dropout: float = 0.1
  sa_ln_eps: float = 1e-6
  freeze_mobilenet: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    for name, value, allowed in (("tokenizer", self.tokenizer, ("vit", "mobilenet_v2")),
                                 ("conv_stem", self.conv_stem, ("both", "sketch")),
                                 ("ca_convention", self.ca_convention, ("code", "figure")),
                                 ("token_reshape", self.token_reshape, ("view", "spatial"))):
      if value not in allowed:
        raise ValueError(f"ZseSbir.{name} must be one of {allowed}, got {value!r}")
    stride = self.patch_size if self.tokenizer == "vit" else 32
    if 2 ** (len(self.stem_features) + 1) != stride or self.image_size % stride:
      raise ValueError(f"ZseSbir: a stride-{stride} tokenizer needs "
                       f"{round(math.log2(stride)) - 1} stem_features and image_size a multiple "
                       f"of {stride}, got {self.stem_features} and {self.image_size}")
    self.grid = self.image_size // stride
    counts = [c for c in za.kept_token_counts(self.grid ** 2, self.keep_rates, self.num_layers)
              if c is not None]
    self.selects_tokens = bool(counts)
    if counts:
      self.anchors = counts[-1]
    elif self.grid % 2:
      raise ValueError(f"ZseSbir: the 2x2 anchor conv needs an even token grid, got "
                       f"{self.grid} x {self.grid} (image_size {self.image_size})")
    else:
      self.anchors = (self.grid // 2) ** 2
    self.sa = SelfAttention(self.tokenizer, self.patch_size, self.hidden, self.num_layers,
                            self.num_heads, self.mlp_dim, self.stem_features, self.keep_rates,
                            self.dropout, self.sa_ln_eps, self.freeze_mobilenet, self.dtype)
    layer = lambda name: za.CrossAttentionLayer(self.hidden, self.ca_heads,  # noqa: E731
                                                self.ca_mlp_dim, self.dropout, self.dtype,
                                                name=name)
    self.ca_sketch, self.ca_photo = layer("ca_sketch"), layer("ca_photo")  # code: layer1, layer2
    if not counts:
      self.anchor_conv = nn.Conv(self.rn_dim, (2, 2), (2, 2), padding="VALID", dtype=self.dtype,
                                 conv_general_dilated=loop_conv.conv_general_dilated)
    self.rn = za.RelationHead(self.anchors, self.dropout, self.dtype)

  def encode(self, images: jax.Array, modality: str, *, train: bool = False) -> Features:
    """Images [B, S, S, 3] of `modality` ("sketch" or "photo") -> SA features {"tokens"
    [B, 1 + n, D] (after the final LayerNorm; n = grid^2, or the kept count), "ret" [B, D]
    (the [Ret] token: Ours-Ret ranks by its L2-normalised value), "kept" int32[B, n] (grid
    index of each token, row-major), "ret_attention" float32[B, layers, grid^2]}."""
    if modality not in ("sketch", "photo"):
      raise ValueError(f"modality must be 'sketch' or 'photo', got {modality!r}")
    if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
      raise ValueError(f"ZseSbir expects images [B, {self.image_size}, {self.image_size}, 3] in "
                       f"[-1, 1], got shape {images.shape}")
    use_stem = self.conv_stem == "both" or modality == "sketch"
    out = dict(self.sa(images.astype(self.dtype), use_stem, train=train))
    out["ret"] = out["tokens"][:, 0]
    return out

  def project(self, sa: Features, modality: str) -> Features:
    """SA features of items of one modality -> their CA inputs, which depend on the item only:
    {"tokens" (the residual), "kept", "query" (own layer's W_q), "key" (the other modality's
    layer's W_k), "value" (own layer's W_v with the code's convention, the other layer's with
    the figure's)}, projections [B, T, ca_heads, D / ca_heads]."""
    own, other = ((self.ca_sketch, self.ca_photo) if modality == "sketch"
                  else (self.ca_photo, self.ca_sketch))
    tokens = sa["tokens"]
    value_layer = own if self.ca_convention == "code" else other
    return {"tokens": tokens, "kept": sa["kept"], "query": own.project("query", tokens),
            "key": other.project("key", tokens), "value": value_layer.project("value", tokens)}

  def _anchor_tokens(self, tokens: jax.Array) -> jax.Array:
    """CA patch tokens [B, n, D] -> anchors [B, A, C]: the 2x2/2 conv on the view (or spatial)
    reshape, rows h * (g / 2) + w; with token selection the tokens themselves."""
    if self.selects_tokens:
      return tokens
    batch, g = tokens.shape[0], self.grid
    if self.token_reshape == "view":  # torch .view(B, D, g, g) (NCHW), then NHWC for nn.Conv
      x = tokens.reshape(batch, self.hidden, g, g).transpose(0, 2, 3, 1)
    else:
      x = tokens.reshape(batch, g, g, self.hidden)
    return self.anchor_conv(x).reshape(batch, -1, self.rn_dim)

  def _ca_inputs(self, own: Features, other: Features) -> tuple[jax.Array, ...]:
    """`project` outputs of an item and its partner -> the own side's CA layer's (residual,
    q, k, v): v from the own item with the code's convention, the partner's with the
    figure's."""
    value = own["value"] if self.ca_convention == "code" else other["value"]
    return own["tokens"], own["query"], other["key"], value

  def _relation(self, anchors_s: jax.Array, anchors_p: jax.Array, *,
                train: bool) -> tuple[jax.Array, jax.Array]:
    """Anchors [B, A, C] of B pairs' sketch and photo sides -> (RN logits float32[B], kernel
    float32[B, A, A])."""
    kernel = za.kernel_matrix(anchors_s, anchors_p)
    return self.rn(kernel.reshape(kernel.shape[0], -1), train=train), kernel

  def pair_logits(self, sketch: Features, photo: Features, *,
                  train: bool = False) -> tuple[jax.Array, Features]:
    """`project` outputs of B sketches and B photos -> (RN logit float32[B] of pair i =
    (sketch i, photo i), before the sigmoid; {"ca_ret_sketch", "ca_ret_photo" [B, D] (the CA
    [Ret] tokens, the triplet loss's inputs), "ca_tokens_sketch"/"_photo" [B, T, D],
    "ca_attention_sketch" float32[B, h, T_s, T_p] (sketch queries over photo keys),
    "ca_attention_photo" [B, h, T_p, T_s], "anchors_sketch"/"_photo" [B, A, C], "kernel"
    float32[B, A, A], "kept_sketch"/"_photo", "scores" sigmoid(logit)})."""
    out_s, attn_s = self.ca_sketch(*self._ca_inputs(sketch, photo), train=train)
    out_p, attn_p = self.ca_photo(*self._ca_inputs(photo, sketch), train=train)
    anchors_s, anchors_p = self._anchor_tokens(out_s[:, 1:]), self._anchor_tokens(out_p[:, 1:])
    logits, kernel = self._relation(anchors_s, anchors_p, train=train)
    return logits, {"ca_ret_sketch": out_s[:, 0], "ca_ret_photo": out_p[:, 0],
                    "ca_tokens_sketch": out_s, "ca_tokens_photo": out_p,
                    "ca_attention_sketch": attn_s, "ca_attention_photo": attn_p,
                    "anchors_sketch": anchors_s, "anchors_photo": anchors_p, "kernel": kernel,
                    "kept_sketch": sketch["kept"], "kept_photo": photo["kept"],
                    "scores": jax.nn.sigmoid(logits)}

  def pair_logits_tile(self, sketch: Features, photo: Features) -> tuple[jax.Array, Features]:
    """Eval mode (no dropout): `project` outputs of t sketches and c photos -> (RN logits
    float32[t, c] of every pair (sketch i, photo j), equal to `pair_logits` on the t * c
    repeated / tiled pairs up to float32 rounding; {"ca_ret_sketch", "ca_ret_photo" [t, c, D],
    "anchors_sketch"/"_photo" [t, c, A, C], "kernel" float32[t, c, A, A], "scores"}).

    Ours (the numbers are the code's): the CA attention of each side is computed per head over
    the whole tile (`CrossAttentionLayer.tile`), with no per-pair copies of the projections;
    the rest (residual, LN', FFN, anchors, kernel, RN) per pair as `pair_logits`."""
    value_of = "query" if self.ca_convention == "code" else "key"
    out_s = self.ca_sketch.tile(*self._ca_inputs(sketch, photo), value_of=value_of)
    out_p = self.ca_photo.tile(*self._ca_inputs(photo, sketch), value_of=value_of)
    t, c = out_s.shape[:2]
    pairs = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731 [a, b, ...] -> [a * b, ...]
    anchors_s = self._anchor_tokens(pairs(out_s[:, :, 1:]))
    anchors_p = self._anchor_tokens(pairs(out_p[:, :, 1:]))  # [c * t, A, C], photo-major
    anchors_p = anchors_p.reshape(c, t, *anchors_p.shape[1:]).swapaxes(0, 1)
    logits, kernel = self._relation(anchors_s, pairs(anchors_p), train=False)
    logits = logits.reshape(t, c)
    return logits, {"ca_ret_sketch": out_s[:, :, 0], "ca_ret_photo": out_p[:, :, 0].swapaxes(0, 1),
                    "anchors_sketch": anchors_s.reshape(t, c, *anchors_s.shape[1:]),
                    "anchors_photo": anchors_p, "kernel": kernel.reshape(t, c, *kernel.shape[1:]),
                    "scores": jax.nn.sigmoid(logits)}

  def __call__(self, sketches: jax.Array, photos: jax.Array, *,
               train: bool = False) -> tuple[jax.Array, Features]:
    """Sketches and photos [B, S, S, 3] -> (RN logits float32[B] of the pairs (sketch i,
    photo i), `pair_logits`' intermediates plus "sa_sketch" and "sa_photo" (`encode`'s)).
    With train=True a "dropout" rng is needed."""
    sa_s, sa_p = self.encode(sketches, "sketch", train=train), self.encode(photos, "photo",
                                                                          train=train)
    logits, aux = self.pair_logits(self.project(sa_s, "sketch"), self.project(sa_p, "photo"),
                                   train=train)
    return logits, {**aux, "sa_sketch": sa_s, "sa_photo": sa_p}


def zse_vit_b16(**kwargs) -> ZseSbir:
  """The official network: ViT-B/16 at 224 px, CA 8 heads / d_ff 1024, 49 anchors of 512."""
  return ZseSbir(**kwargs)


def zse_small(**kwargs) -> ZseSbir:
  """CPU size, every component kept: a 192-wide, 4-block, 3-head ViT (MLP 768, as
  `vit_image.vit_small`) at 224 px (196 tokens, 49 anchors, the code's RN widths), CA 4 heads /
  d_ff 256, anchors of 128."""
  return ZseSbir(**{"hidden": 192, "num_layers": 4, "num_heads": 3, "mlp_dim": 768,
                    "stem_features": (16, 32, 64), "ca_heads": 4, "ca_mlp_dim": 256,
                    "rn_dim": 128, **kwargs})


def zse_mobilenet(**kwargs) -> ZseSbir:
  """CPU size on pretrained features: MobileNetV2's 1280-d feature map at 256 px (8 x 8 tokens,
  16 anchors) projected to 192, averaged with a 5-conv stride-32 stem, 2 SA blocks, CA 4 heads /
  d_ff 256, anchors of 128."""
  return ZseSbir(**{"tokenizer": "mobilenet_v2", "image_size": 256, "hidden": 192,
                    "num_layers": 2, "num_heads": 3, "mlp_dim": 768,
                    "stem_features": (16, 32, 64, 128), "ca_heads": 4, "ca_mlp_dim": 256,
                    "rn_dim": 128, **kwargs})


def count_params(tree: Any) -> int:
  """Number of scalars in a tree of arrays or ShapeDtypeStructs."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def init_variables(model: ZseSbir, rng: jax.Array,
                   pretrained: str | pathlib.Path | None = None) -> Variables:
  """Random {"params"} for `model`, then, with `pretrained`, the backbone from that local file
  (`load_pretrained`)."""
  images = jnp.zeros((1, model.image_size, model.image_size, 3), jnp.float32)
  variables = jax.jit(lambda key: model.init(key, images, images))(rng)
  return variables if pretrained is None else load_pretrained(model, variables, pretrained)


def load_pretrained(model: ZseSbir, variables: Variables,
                    path: str | pathlib.Path) -> Variables:
  """`variables` with the SA backbone replaced from a local file; everything else unchanged.

  "vit" tokenizer: a ViT-B/16-layout checkpoint, Google's .npz (e.g. `ViT-B_16.npz`, or the SAM
  one the code's `sam_ViT-B_16.pth` was converted from) or timm's .safetensors, mapped by the
  foundation's `pretrained_weights.load_vit` onto patch_embed, cls, pos_embed (resized to the
  grid) and the SA encoder blocks; the classifier head is ignored; the conv stem stays random
  (it is not in the checkpoint, as in the code). "mobilenet_v2": a MobileNetV2-1.0 TFLite
  ImageNet classifier (`mobilenet_v2.load_mobilenet_v2`) onto the feature body.
  Raises ValueError naming the file and the first key that does not fit.
  """
  path = pathlib.Path(path)
  params = dict(variables["params"])
  sa = dict(params["sa"])
  if model.tokenizer == "vit":
    like = {"params": {key: sa[key] for key in VIT_KEYS}}
    sa.update(pretrained_weights.load_vit(path, like)["params"])
  else:
    _, loaded, _ = mobilenet_v2.load_mobilenet_v2(path)
    body = {k: v for k, v in loaded["params"].items() if k != "classifier"}
    want = traverse_util.flatten_dict(sa["mobilenet"], sep="/")
    got = traverse_util.flatten_dict(body, sep="/")
    if set(want) != set(got) or any(np.shape(got[k]) != want[k].shape for k in want):
      raise ValueError(f"{path}: the MobileNetV2 weights do not fit the tokenizer's body")
    sa["mobilenet"] = body
  params["sa"] = sa
  return {**variables, "params": params}
