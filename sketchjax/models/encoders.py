"""Photo and sketch encoders for retrieval: a backbone, a linear projection, L2 normalisation.

Backbones ("mobilenet_v2", "resnet18", "resnet34", "vit_b16", "vit_small"):
MobileNetV2 (`mobilenet_v2`; pooled 1280-d), the torchvision ResNets
(`torchvision_resnet`; pooled 512-d) and the image ViTs (`vit_image`; [CLS]
768-d / 192-d). Every encoder takes float[B, H, W, 3] images in [-1, 1] (the
input of the MobileNetV2 and ViT weights); for the ResNets the encoder maps them
to torchvision's ImageNet normalisation ((x + 1) / 2 - mean) / std itself, so
one data pipeline serves every backbone. H, W: multiples of 32 for MobileNetV2,
of 16 for the ViTs, any for the ResNets.

BatchNorm backbones (ResNets, MobileNetV2 with `mobilenet_batch_norm`) keep
"batch_stats": `apply(..., train=True, mutable=["batch_stats"])`.
`init_encoder_variables` initialises randomly and then, given a local file,
replaces the backbone weights of each modality (or of the shared encoder).
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from sketchjax.models import mobilenet_v2, pretrained_weights, torchvision_resnet, vit_image

Variables = dict[str, Any]
BACKBONES = ("mobilenet_v2", "resnet18", "resnet34", "vit_b16", "vit_small")


def _backbone(name: str, mobilenet_batch_norm: bool, dtype: Any) -> nn.Module:
  """The headless backbone module called "backbone" inside an ImageEncoder."""
  if name == "mobilenet_v2":
    return mobilenet_v2.MobileNetV2(num_classes=None, batch_norm=mobilenet_batch_norm,
                                    dtype=dtype, name="backbone")
  if name == "resnet18":
    return torchvision_resnet.resnet18(num_classes=None, dtype=dtype, name="backbone")
  if name == "resnet34":
    return torchvision_resnet.resnet34(num_classes=None, dtype=dtype, name="backbone")
  if name == "vit_b16":
    return vit_image.vit_b16(dtype=dtype, name="backbone")
  if name == "vit_small":
    return vit_image.vit_small(dtype=dtype, name="backbone")
  raise ValueError(f"unknown encoder backbone {name!r}; expected one of {BACKBONES}")


class ImageEncoder(nn.Module):
  """Backbone features -> Dense(embed_dim) -> unit-norm embedding.

  Attributes:
    backbone: one of BACKBONES.
    embed_dim: embedding width; 0: no projection, the embedding is the
      normalised backbone feature (the DF-SBIR students, spec 2.4).
    mobilenet_batch_norm: MobileNetV2 only: True for conv + BatchNorm (random
      init), False for conv + bias (the BN-folded form of the ImageNet TFLite
      weights).
    dtype: compute dtype (parameters stay float32; embeddings are float32).
  """

  backbone: str
  embed_dim: int = 512
  mobilenet_batch_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """float[B, H, W, 3] in [-1, 1] -> (embeddings float32[B, embed_dim] of unit norm,
    {"features": backbone features [B, F] (un-normalised), "feature_map" [B, h, w, C] (CNNs)
    or "tokens" [B, 1 + N, D] (ViTs)})."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"ImageEncoder expects images [B, H, W, 3] in [-1, 1], "
                       f"got shape {images.shape}")
    net = _backbone(self.backbone, self.mobilenet_batch_norm, self.dtype)
    if self.backbone.startswith("resnet"):
      mean = jnp.asarray(torchvision_resnet.IMAGENET_MEAN)
      std = jnp.asarray(torchvision_resnet.IMAGENET_STD)
      images = ((images + 1) / 2 - mean) / std
    _, out = net(images, train=train)
    if self.backbone.startswith("vit"):
      aux = {"features": out["cls"], "tokens": out["tokens"]}
    else:
      aux = {"features": out["pooled"], "feature_map": out["feature_map"]}
    projected = aux["features"]
    if self.embed_dim:
      projected = nn.Dense(self.embed_dim, dtype=self.dtype, name="projection")(projected)
    projected = projected.astype(jnp.float32)
    embeddings = projected * jax.lax.rsqrt(jnp.sum(projected**2, -1, keepdims=True) + 1e-12)
    return embeddings, aux


class ImageClassifier(nn.Module):
  """Backbone features -> Dense(num_classes): the teachers and the modality network
  of CrossX-DFL (spec 2.2), on images float[B, H, W, 3] in [-1, 1].

  Attributes: backbone, mobilenet_batch_norm, dtype as ImageEncoder; num_classes
  (1 for the modality network's single logit).
  """

  backbone: str
  num_classes: int
  mobilenet_batch_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-> (logits float32[B, num_classes], {"features": pooled backbone features [B, F]})."""
    _, aux = ImageEncoder(self.backbone, 0, self.mobilenet_batch_norm, self.dtype,
                          name="encoder")(images, train=train)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(aux["features"])
    return logits.astype(jnp.float32), {"features": aux["features"]}


class SketchPhotoEncoder(nn.Module):
  """A sketch and a photo ImageEncoder ("sketch", "photo"), or one shared ("encoder").

  A shared BatchNorm encoder updates its statistics with the sketch batch, then
  the photo batch, in each training call.

  Attributes:
    backbone, embed_dim, mobilenet_batch_norm, dtype: as ImageEncoder.
    shared: one encoder (one set of weights) for both modalities.
  """

  backbone: str
  embed_dim: int = 512
  shared: bool = False
  mobilenet_batch_norm: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    encoder = functools.partial(ImageEncoder, self.backbone, self.embed_dim,
                                self.mobilenet_batch_norm, self.dtype)
    if self.shared:
      self.encoder = encoder()
    else:
      self.sketch = encoder()
      self.photo = encoder()

  def encode_sketch(self, images: jax.Array, *,
                    train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sketch images [B, H, W, 3] in [-1, 1] -> ImageEncoder's (embeddings, aux)."""
    return (self.encoder if self.shared else self.sketch)(images, train=train)

  def encode_photo(self, images: jax.Array, *,
                   train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Photos [B, H, W, 3] in [-1, 1] -> ImageEncoder's (embeddings, aux)."""
    return (self.encoder if self.shared else self.photo)(images, train=train)

  def __call__(self, sketches: jax.Array, photos: jax.Array, *,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Sketches [B, H, W, 3], photos [B', H, W, 3] -> unit-norm embeddings
    ([B, embed_dim], [B', embed_dim])."""
    return (self.encode_sketch(sketches, train=train)[0],
            self.encode_photo(photos, train=train)[0])


Model = ImageEncoder | ImageClassifier | SketchPhotoEncoder


def _encoder_scopes(model: Model) -> tuple[tuple[str, ...], ...]:
  """Paths, inside each variable collection, of the model's ImageEncoders."""
  if isinstance(model, ImageEncoder):
    return ((),)
  if isinstance(model, ImageClassifier):
    return (("encoder",),)
  return (("encoder",),) if model.shared else (("sketch",), ("photo",))


def _check_like(path: pathlib.Path, loaded: Variables, like: Variables) -> None:
  """Raise naming `path` and the first key where `loaded` differs from `like` in name or shape."""
  want = traverse_util.flatten_dict(like, sep="/")
  got = traverse_util.flatten_dict(loaded, sep="/")
  for key, leaf in want.items():
    if key not in got:
      raise ValueError(f"{path}: gives no weight for the backbone's '{key}' {leaf.shape}")
    if got[key].shape != leaf.shape:
      raise ValueError(f"{path}: weight for the backbone's '{key}' has shape {got[key].shape}, "
                       f"the encoder needs {leaf.shape}")
  extra = sorted(set(got) - set(want))
  if extra:
    raise ValueError(f"{path}: weights the encoder's backbone does not have, e.g. {extra[:5]}")


def _load_backbone(model: Model, path: pathlib.Path,
                   like: Variables) -> Variables:
  """Backbone variables (structured as `like`) from a local pretrained file."""
  if model.backbone == "mobilenet_v2":
    if model.mobilenet_batch_norm:
      raise ValueError(f"{path}: the TFLite MobileNetV2 weights are BatchNorm-folded (conv + "
                       "bias); build the encoder with mobilenet_batch_norm=False to load them")
    _, loaded, _ = mobilenet_v2.load_mobilenet_v2(path)
    # The ImageNet classifier is not part of the backbone.
    loaded = {"params": {k: v for k, v in loaded["params"].items() if k != "classifier"}}
    _check_like(path, loaded, like)
    return loaded
  if model.backbone.startswith("resnet"):
    return pretrained_weights.load_torchvision_resnet(path, like)
  return pretrained_weights.load_vit(path, like)


def init_encoder_variables(model: Model, rng: jax.Array,
                           image_size: int,
                           pretrained: str | pathlib.Path | None = None) -> Variables:
  """Random variables for [B, image_size, image_size, 3] inputs, then, with `pretrained`, the
  backbone of each modality (or the shared one) replaced from that local file.

  Files: MobileNetV2, a TFLite ImageNet classifier (`load_mobilenet_v2`);
  ResNets, torchvision/timm safetensors; ViTs, timm safetensors or Google's
  .npz (`pretrained_weights`). The projections stay random. Raises ValueError
  naming the file and the first key whose name or shape does not match.
  """
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  inputs = (images, images) if isinstance(model, SketchPhotoEncoder) else (images,)
  variables = jax.jit(functools.partial(model.init, train=False))(rng, *inputs)
  if pretrained is None:
    return variables
  path = pathlib.Path(pretrained)
  scopes = _encoder_scopes(model)

  def backbone_of(tree: Variables, scope: tuple[str, ...]) -> Variables:
    for name in scope:
      tree = tree[name]
    return tree["backbone"]

  like = {collection: backbone_of(tree, scopes[0]) for collection, tree in variables.items()}
  loaded = _load_backbone(model, path, like)
  flat = traverse_util.flatten_dict(variables)
  for collection, tree in loaded.items():
    for key, value in traverse_util.flatten_dict(tree).items():
      for scope in scopes:
        flat[(collection, *scope, "backbone", *key)] = value
  return traverse_util.unflatten_dict(flat)


def split_params(variables: Variables) -> tuple[Any, Variables]:
  """Flax variables -> ("params", every other collection: BatchNorm statistics...)."""
  return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def initial_variables(make: Callable[[], Variables]) -> Callable[[], Variables]:
  """`make()` computed once on the host (device_get), then handed out as jnp
  arrays: for an `Objective.init`, which is traced more than once, so that the
  initial variables (random, then pretrained weights read from a file) are
  those of the config's seed and are read only once."""
  cache: list[Variables] = []

  def get() -> Variables:
    if not cache:
      cache.append(jax.device_get(make()))
    return jax.tree.map(jnp.asarray, cache[0])

  return get
