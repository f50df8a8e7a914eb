"""Pretrained ResNet and ViT weights from local files, in the formats their publishers ship.

- torchvision / timm ResNet-18/34 as safetensors (`conv1.weight` [O, I, H, W],
  `bn1.running_mean`, `layer1.0.downsample.0.weight`, `fc.weight` [out, in])
  -> `torchvision_resnet.TorchvisionResNet` variables ("params" and "batch_stats").
- timm ViT safetensors (`patch_embed.proj.weight`, `cls_token`, `pos_embed`,
  `blocks.{i}.attn.qkv.weight` [3D, D] fused q|k|v, `blocks.{i}.norm1.weight`,
  `norm.weight`, `head.weight`) -> `vit_image.ImageViT` params.
- Google's ViT `.npz` (google-research/vision_transformer names:
  `embedding/kernel` [P, P, 3, D], `cls`, `Transformer/posembed_input/pos_embedding`,
  `Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/query/kernel`
  [D, heads, head_dim], `LayerNorm_0`, `MlpBlock_3/Dense_0`,
  `Transformer/encoder_norm`, `head`) -> `vit_image.ImageViT` params.

Every loader takes `like`, the target model's variables (arrays or
`jax.ShapeDtypeStruct`s from `jax.eval_shape(model.init, ...)`), and returns
variables of the same structure, float32. Each model leaf must find its file
key in the publisher's shape; a missing or misshapen key raises ValueError
naming the file, the key and both shapes, as does a file key the model does not
use (except `*.num_batches_tracked`, and the classifier head when the model
has none). ViT position embeddings are resized bilinearly when the model's
patch grid differs from the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import traverse_util

from sketchjax.models import vit_image

Variables = dict[str, Any]
Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class _Source:
  """Where a model leaf comes from: file key, its shape in the file (None: checked by
  `convert`), and the conversion from the file's layout to the model's."""

  key: str
  shape: Shape | None
  convert: Callable[[np.ndarray], np.ndarray] = lambda value: value


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """A .safetensors file -> {name: numpy array} (any dtype the file holds)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: pretrained weight file not found")
  try:
    return safetensors.numpy.load_file(path)
  except Exception as error:  # the package raises its own SafetensorError
    raise ValueError(f"{path}: not a readable safetensors file ({error})") from error


def read_npz(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """A numpy .npz of named arrays (no pickled objects) -> {name: array}."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: pretrained weight file not found")
  try:
    with np.load(path, allow_pickle=False) as data:
      return {key: data[key] for key in data.files}
  except Exception as error:
    raise ValueError(f"{path}: not a readable .npz of arrays ({error})") from error


def _assemble(path: pathlib.Path, arrays: dict[str, np.ndarray], like: Variables,
              source_of: Callable[[tuple[str, ...], Shape], _Source | None],
              ignored: Callable[[str], bool]) -> Variables:
  """Fill every leaf of `like` from `arrays` through `source_of(leaf path, leaf shape)`."""
  leaves = traverse_util.flatten_dict(like)
  used = set()
  out = {}
  # "params" first, so that a missing layer is reported by its weight rather than its statistics.
  for leaf_path, leaf in sorted(leaves.items(), key=lambda item: item[0][0] != "params"):
    shape = tuple(leaf.shape)
    where = f"model leaf {'/'.join(leaf_path)} {shape}"
    try:
      source = source_of(leaf_path, shape)
    except ValueError as error:
      raise ValueError(f"{path}: {where}: {error}") from None
    if source is None:
      raise ValueError(f"{path}: {where} has no counterpart in this file's format")
    if source.key not in arrays:
      raise ValueError(f"{path}: no weight '{source.key}' (needed for {where})")
    value = arrays[source.key]
    if source.shape is not None and value.shape != source.shape:
      raise ValueError(f"{path}: weight '{source.key}' has shape {value.shape}, {where} needs "
                       f"{source.shape} in this file's layout")
    try:
      value = np.asarray(source.convert(np.asarray(value, np.float32)), np.float32)
    except ValueError as error:
      raise ValueError(f"{path}: weight '{source.key}' {value.shape} for {where}: "
                       f"{error}") from None
    if value.shape != shape:
      raise ValueError(f"{path}: weight '{source.key}' converts to shape {value.shape}, "
                       f"{where} needs {shape}")
    used.add(source.key)
    out[leaf_path] = jnp.asarray(value)
  unused = sorted(key for key in arrays if key not in used and not ignored(key))
  if unused:
    raise ValueError(f"{path}: {len(unused)} weights the model does not use, e.g. "
                     f"{unused[:5]}; is it the model the file was saved from?")
  return traverse_util.unflatten_dict(out)


def _conv_source(key: str, shape: Shape) -> _Source:
  """torch conv weight [O, I, H, W] -> Flax kernel [H, W, I, O]."""
  return _Source(key, (shape[3], shape[2], shape[0], shape[1]),
                 lambda w: w.transpose(2, 3, 1, 0))


def _linear_source(key: str, shape: Shape) -> _Source:
  """torch Linear weight [out, in] -> Flax kernel [in, out]."""
  return _Source(key, (shape[1], shape[0]), lambda w: w.T)


def _has_head(like: Variables, name: str) -> bool:
  return name in like.get("params", {})


# --- ResNet (torchvision / timm names) -----------------------------------------------------------

_TORCH_LEAF = {("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def _resnet_source(leaf_path: tuple[str, ...], shape: Shape) -> _Source | None:
  collection, *modules, leaf = leaf_path
  module = ".".join(name.replace("_", ".") for name in modules)  # layer1_0 -> layer1.0
  if leaf == "kernel":
    key = f"{module}.weight"
    return _conv_source(key, shape) if len(shape) == 4 else _linear_source(key, shape)
  if (collection, leaf) not in _TORCH_LEAF:
    return None
  return _Source(f"{module}.{_TORCH_LEAF[collection, leaf]}", shape)


def load_torchvision_resnet(path: str | pathlib.Path, like: Variables) -> Variables:
  """torchvision/timm ResNet safetensors -> {"params", "batch_stats"} shaped as `like`.

  `like` is a `TorchvisionResNet`'s variables; without an fc head in the model
  the file's `fc.*` is ignored.
  """
  path = pathlib.Path(path)
  head = _has_head(like, "fc")
  return _assemble(path, read_safetensors(path), like, _resnet_source,
                   lambda key: key.endswith(".num_batches_tracked")
                   or (not head and key.startswith("fc.")))


# --- ViT ------------------------------------------------------------------------------------------


def _pos_embed_source(key: str, shape: Shape) -> _Source:
  """Checkpoint [1, 1 + n*n, D] -> the model's [1, 1 + N, D], N a square grid."""
  side = round((shape[1] - 1) ** 0.5)
  if side * side != shape[1] - 1:
    raise ValueError(f"the model's position embeddings {shape} are not of a square patch grid")

  def convert(value: np.ndarray) -> np.ndarray:
    if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != shape[2]:
      raise ValueError(f"expected position embeddings [1, 1 + n*n, {shape[2]}]")
    return np.asarray(vit_image.resize_pos_embed(jnp.asarray(value), (side, side)))

  return _Source(key, None, convert)


_BLOCK = re.compile(r"encoder/block_(\d+)/(.+)")
_TIMM_BLOCK_MODULES = {"norm_attention": "norm1", "norm_mlp": "norm2", "mlp_in": "mlp.fc1",
                       "mlp_out": "mlp.fc2", "attention/out": "attn.proj"}
_TIMM_LEAF = {"scale": "weight", "bias": "bias"}


def _timm_vit_source(leaf_path: tuple[str, ...], shape: Shape) -> _Source | None:
  name = "/".join(leaf_path[1:])
  if name == "patch_embed/kernel":
    return _conv_source("patch_embed.proj.weight", shape)
  if name == "patch_embed/bias":
    return _Source("patch_embed.proj.bias", shape)
  if name == "cls":
    return _Source("cls_token", shape)
  if name == "pos_embed":
    return _pos_embed_source("pos_embed", shape)
  if name == "head/kernel":
    return _linear_source("head.weight", shape)
  if name == "head/bias":
    return _Source("head.bias", shape)
  if name.startswith("encoder/final_norm/"):
    return _Source(f"norm.{_TIMM_LEAF[leaf_path[-1]]}", shape)
  match = _BLOCK.fullmatch(name)
  if match is None:
    return None
  block, rest = match.groups()
  prefix = f"blocks.{block}."
  module, leaf = rest.rsplit("/", 1)
  if module in ("attention/query", "attention/key", "attention/value"):
    part = ("attention/query", "attention/key", "attention/value").index(module)
    if leaf == "kernel":  # [D, heads, head_dim] from rows part*D:(part+1)*D of qkv.weight [3D, D]
      width = shape[0]
      return _Source(prefix + "attn.qkv.weight", (3 * width, width),
                     lambda w: w[part * width:(part + 1) * width].T.reshape(shape))
    width = shape[0] * shape[1]
    return _Source(prefix + "attn.qkv.bias", (3 * width,),
                   lambda b: b[part * width:(part + 1) * width].reshape(shape))
  if module not in _TIMM_BLOCK_MODULES:
    return None
  key = prefix + _TIMM_BLOCK_MODULES[module]
  if module == "attention/out" and leaf == "kernel":  # torch [D, D] -> [heads, head_dim, D]
    return _Source(key + ".weight", (shape[2], shape[0] * shape[1]), lambda w: w.T.reshape(shape))
  if leaf == "kernel":
    return _linear_source(key + ".weight", shape)
  return _Source(f"{key}.{_TIMM_LEAF[leaf]}", shape)


def load_timm_vit(path: str | pathlib.Path, like: Variables) -> Variables:
  """timm ViT safetensors (`vit_base_patch16_224.*`) -> {"params"} shaped as `like`.

  `like` is an `ImageViT`'s variables; the fused `attn.qkv` is split into
  query, key and value; without a head in the model the file's `head.*` is ignored.
  """
  path = pathlib.Path(path)
  head = _has_head(like, "head")
  return _assemble(path, read_safetensors(path), like, _timm_vit_source,
                   lambda key: not head and key.startswith("head."))


_GOOGLE_BLOCK_MODULES = {"norm_attention": "LayerNorm_0", "norm_mlp": "LayerNorm_2",
                         "mlp_in": "MlpBlock_3/Dense_0", "mlp_out": "MlpBlock_3/Dense_1",
                         "attention": "MultiHeadDotProductAttention_1"}


def _google_vit_source(leaf_path: tuple[str, ...], shape: Shape) -> _Source | None:
  name = "/".join(leaf_path[1:])
  if name.startswith("patch_embed/"):
    return _Source(name.replace("patch_embed/", "embedding/"), shape)
  if name == "pos_embed":
    return _pos_embed_source("Transformer/posembed_input/pos_embedding", shape)
  if name == "cls" or name.startswith("head/"):
    return _Source(name, shape)
  if name.startswith("encoder/final_norm/"):
    return _Source(f"Transformer/encoder_norm/{leaf_path[-1]}", shape)
  match = _BLOCK.fullmatch(name)
  if match is None or match.group(2).split("/", 1)[0] not in _GOOGLE_BLOCK_MODULES:
    return None
  block, rest = match.groups()
  module, tail = rest.split("/", 1)
  return _Source(f"Transformer/encoderblock_{block}/{_GOOGLE_BLOCK_MODULES[module]}/{tail}", shape)


def load_google_vit(path: str | pathlib.Path, like: Variables) -> Variables:
  """Google's ViT `.npz` (vision_transformer / big_vision names) -> {"params"} shaped as `like`.

  Without a head in the model the file's `head/*` and `pre_logits/*` (the
  ImageNet-21k checkpoints' representation layer before the head) are ignored.
  """
  path = pathlib.Path(path)
  head = _has_head(like, "head")
  return _assemble(path, read_npz(path), like, _google_vit_source,
                   lambda key: not head and key.startswith(("head/", "pre_logits/")))


def load_vit(path: str | pathlib.Path, like: Variables) -> Variables:
  """A ViT checkpoint by its suffix: `.safetensors` (timm names) or `.npz` (Google's names)."""
  path = pathlib.Path(path)
  if path.suffix == ".safetensors":
    return load_timm_vit(path, like)
  if path.suffix == ".npz":
    return load_google_vit(path, like)
  raise ValueError(f"{path}: ViT weights must be timm's .safetensors or Google's .npz, "
                   f"not '{path.suffix}'")
