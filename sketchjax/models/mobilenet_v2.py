"""MobileNetV2-1.0 (Sandler et al., 2018) in Flax, and its ImageNet weights from TFLite files.

The network: a 3x3/2 conv to 32 channels, 17 inverted-residual blocks
(1x1 expansion by t, 3x3 depthwise, linear 1x1 projection; a residual add
where the stride is 1 and the channels stay), a 1x1 conv to 1280, global
average pooling and a 1001-way classifier (index 0 = background). Every
conv but the projections is followed by ReLU6. Padding is TensorFlow's
'SAME' (with stride 2 on an even side: 0 before, 1 after), which is what
`nn.Conv(padding="SAME")` computes and what the TFLite graphs declare.

`load_mobilenet_v2` reads one of the two TFLite classifiers of
../shared/pretrained/mobilenet_v2/ (uint8 quantisation-aware, or int8
per-channel post-training quantised), checks that its graph is this
network operator by operator, and returns the weights dequantised to
float32 in the BN-folded form (conv + bias) those files hold.

Input: float32[B, H, W, 3] = uint8 RGB / 127.5 - 1, H and W multiples of 32
(224 as trained).
"""

from __future__ import annotations

import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.models import depthwise_conv
from sketchjax.models import tflite_weights

Params = dict[str, Any]

# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2-1.0.
BLOCK_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                  (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def block_specs() -> list[tuple[int, int, int, int]]:
  """(input channels, expansion, output channels, stride) of the 17 blocks, in order."""
  specs, channels = [], STEM_CHANNELS
  for expansion, out, repeats, stride in BLOCK_SETTINGS:
    for repeat in range(repeats):
      specs.append((channels, expansion, out, stride if repeat == 0 else 1))
      channels = out
  return specs


class ConvUnit(nn.Module):
  """Conv (+ bias, or BatchNorm without bias) and optional ReLU6; depthwise where `depthwise`
  (as shifted multiply-adds: `depthwise_conv`, 4-70x faster a layer than XLA CPU's grouped
  convolution)."""

  features: int
  kernel: int = 1
  stride: int = 1
  depthwise: bool = False
  relu6: bool = True
  batch_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride, padding="SAME",
                feature_group_count=x.shape[-1] if self.depthwise else 1,
                use_bias=not self.batch_norm, dtype=self.dtype,
                conv_general_dilated=depthwise_conv.conv_general_dilated, name="conv")(x)
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3,
                       dtype=self.dtype, name="bn")(x)
    return jnp.clip(x, 0.0, 6.0) if self.relu6 else x


class InvertedResidual(nn.Module):
  """1x1 expand (absent when expansion is 1), 3x3 depthwise, linear 1x1 project, residual add."""

  expansion: int
  features: int
  stride: int
  batch_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    inputs, hidden = x, x.shape[-1] * self.expansion
    kw = {"batch_norm": self.batch_norm, "dtype": self.dtype}
    if self.expansion != 1:
      x = ConvUnit(hidden, name="expand", **kw)(x, train)
    x = ConvUnit(hidden, 3, self.stride, depthwise=True, name="depthwise", **kw)(x, train)
    x = ConvUnit(self.features, relu6=False, name="project", **kw)(x, train)
    if self.stride == 1 and inputs.shape[-1] == self.features:
      x = x + inputs
    return x


class MobileNetV2(nn.Module):
  """MobileNetV2-1.0 classifier.

  Attributes:
    num_classes: outputs of the classifier (1001 for the ImageNet files);
      None: no classifier (a backbone), the first output is then "pooled".
    batch_norm: False: conv + bias (the BN-folded form of the pretrained
      weights); True: conv without bias + BatchNorm, for training from random
      init ("batch_stats" in the variables; train=True needs
      mutable=["batch_stats"]).
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int | None = 1001
  batch_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """float32[B, H, W, 3] in [-1, 1] -> (logits [B, num_classes] or pooled,
    intermediates).

    Intermediates: "feature_map" [B, H/32, W/32, 1280] (after the last
    ReLU6), "pooled" [B, 1280] (its spatial mean), "logits" (with a classifier).
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] % 32 or images.shape[2] % 32:
      raise ValueError(f"MobileNetV2 expects images [B, H, W, 3] with H and W multiples of 32, "
                       f"got shape {images.shape}")
    kw = {"batch_norm": self.batch_norm, "dtype": self.dtype}
    x = ConvUnit(STEM_CHANNELS, 3, 2, name="stem", **kw)(images.astype(self.dtype), train)
    for index, (_, expansion, features, stride) in enumerate(block_specs()):
      x = InvertedResidual(expansion, features, stride, name=f"block{index}", **kw)(x, train)
    feature_map = ConvUnit(HEAD_CHANNELS, name="head", **kw)(x, train)
    pooled = feature_map.astype(jnp.float32).mean(axis=(1, 2))
    if self.num_classes is None:
      return pooled, {"feature_map": feature_map, "pooled": pooled}
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(pooled)
    logits = logits.astype(jnp.float32)
    return logits, {"feature_map": feature_map, "pooled": pooled, "logits": logits}


# --- Loading the TFLite classifiers -------------------------------------------------------------

_PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE")
_AFTER_LOGITS = ("RESHAPE", "SOFTMAX", "QUANTIZE", "DEQUANTIZE")


class _GraphWalk:
  """Follows the activation through a TFLite graph that must be a plain MobileNetV2 chain."""

  def __init__(self, graph: tflite_weights.TfliteGraph):
    self.graph = graph
    self.ops = list(graph.operators)
    self.position = 0
    if len(graph.inputs) != 1:
      raise ValueError(f"{graph.path}: {len(graph.inputs)} graph inputs; MobileNetV2 has one")
    self.current = graph.inputs[0]

  def fail(self, op: tflite_weights.Operator, what: str) -> ValueError:
    return ValueError(f"{self.graph.path}: operator {op.index} ({op.kind}) {what}; this is not "
                      "the MobileNetV2-1.0 graph the loader supports")

  def next(self, kinds: tuple[str, ...], role: str) -> tflite_weights.Operator:
    """The next operator on the activation path, which must be one of `kinds`."""
    while True:
      if self.position == len(self.ops):
        raise ValueError(f"{self.graph.path}: the graph ends before the {role} ({'/'.join(kinds)})"
                         "; this is not the MobileNetV2-1.0 graph the loader supports")
      op = self.ops[self.position]
      self.position += 1
      if self.current not in op.inputs:
        raise self.fail(op, f"does not read the previous activation (tensor {self.current}) "
                        f"where the {role} should")
      if op.kind in _PASS_THROUGH and op.kind not in kinds:
        self.current = op.outputs[0]
        continue
      if op.kind not in kinds:
        raise self.fail(op, f"stands where the {role} ({'/'.join(kinds)}) should")
      self.current = op.outputs[0]
      return op

  def conv(self, role: str, features: int, kernel: int, stride: int, depthwise: bool,
           relu6: bool) -> Params:
    """The next conv as Flax ConvUnit params {"conv": {"kernel", "bias"}}, after checking it."""
    op = self.next(("DEPTHWISE_CONV_2D",) if depthwise else ("CONV_2D",), role)
    options = op.options
    expected = {"stride": (stride, stride), "dilation": (1, 1),
                "activation": "RELU6" if relu6 else "NONE"}
    if kernel > 1:
      expected["padding"] = "SAME"
    if depthwise:
      expected["depth_multiplier"] = 1
    for key, value in expected.items():
      if options.get(key) != value:
        raise self.fail(op, f"has {key}={options.get(key)!r} where the {role} has {value!r}")
    weights = tflite_weights.weight_values(self.graph, op)
    in_channels = self.graph.tensors[op.inputs[0]].shape[-1]
    shape = (1, kernel, kernel, features) if depthwise else (features, kernel, kernel, in_channels)
    if weights.shape != shape or (depthwise and in_channels != features):
      raise self.fail(op, f"has weights {weights.shape} on {in_channels} input channels where "
                      f"the {role} needs {shape}")
    # TFLite: conv [out, kh, kw, in], depthwise [1, kh, kw, channels]; Flax: [kh, kw, in, out].
    kernel_values = weights.transpose(1, 2, 0, 3) if depthwise else weights.transpose(1, 2, 3, 0)
    bias = tflite_weights.bias_values(self.graph, op, features)
    return {"conv": {"kernel": kernel_values, "bias": bias}}

  def add(self, role: str, shortcut: int) -> None:
    """The next ADD, which must sum the projection (current activation) and `shortcut`."""
    projection = self.current
    op = self.next(("ADD",), role)
    if sorted(op.inputs) != sorted((projection, shortcut)):
      raise self.fail(op, f"adds tensors {op.inputs}; the {role} adds the projection and the "
                      f"block's input (tensors {projection}, {shortcut})")
    if op.options.get("activation") != "NONE":
      raise self.fail(op, f"has a fused {op.options.get('activation')} after the {role}")


def _params_from_graph(graph: tflite_weights.TfliteGraph, num_classes: int) -> Params:
  walk = _GraphWalk(graph)
  params = {"stem": walk.conv("stem conv", STEM_CHANNELS, 3, 2, False, True)}
  for index, (channels, expansion, features, stride) in enumerate(block_specs()):
    shortcut, block = walk.current, {}
    if expansion != 1:
      block["expand"] = walk.conv(f"block {index} expansion", channels * expansion, 1, 1,
                                  False, True)
    block["depthwise"] = walk.conv(f"block {index} depthwise conv", channels * expansion, 3,
                                   stride, True, True)
    block["project"] = walk.conv(f"block {index} projection", features, 1, 1, False, False)
    if stride == 1 and channels == features:
      walk.add(f"block {index} residual add", shortcut)
    params[f"block{index}"] = block
  params["head"] = walk.conv("1x1 conv to 1280", HEAD_CHANNELS, 1, 1, False, True)
  pool = walk.next(("AVERAGE_POOL_2D", "MEAN"), "global average pool")
  spatial = graph.tensors[pool.inputs[0]].shape[1:3]
  if pool.kind == "MEAN":
    axes = tflite_weights.constant(graph, pool.inputs[1]).data
    if sorted(np.ravel(axes).tolist()) != [1, 2]:
      raise walk.fail(pool, f"averages over axes {np.ravel(axes).tolist()}, not the spatial [1, 2]")
  elif pool.options.get("filter") != tuple(spatial) or pool.options.get("activation") != "NONE":
    raise walk.fail(pool, f"pools {pool.options.get('filter')} over a {tuple(spatial)} map; the "
                    "global average pool covers the whole map")
  logits = walk.next(("CONV_2D", "FULLY_CONNECTED", "RESHAPE"), "classifier")
  if logits.kind == "RESHAPE":
    logits = walk.next(("CONV_2D", "FULLY_CONNECTED"), "classifier")
  if logits.options.get("activation") != "NONE":
    raise walk.fail(logits, f"has a fused {logits.options.get('activation')} in the classifier")
  weights = tflite_weights.weight_values(graph, logits)
  if weights.reshape(weights.shape[0], -1).shape != (num_classes, HEAD_CHANNELS):
    raise walk.fail(logits, f"has weights {weights.shape}; the classifier needs "
                    f"[{num_classes}, (1, 1,) {HEAD_CHANNELS}]")
  params["classifier"] = {"kernel": weights.reshape(num_classes, HEAD_CHANNELS).T,
                          "bias": tflite_weights.bias_values(graph, logits, num_classes)}
  for op in walk.ops[walk.position:]:
    if op.kind not in _AFTER_LOGITS or walk.current not in op.inputs:
      raise walk.fail(op, "follows the classifier; only reshape, softmax and (de)quantisation "
                      "may")
    if op.kind == "SOFTMAX" and op.options.get("beta") != 1.0:
      raise walk.fail(op, f"is a softmax with beta {op.options.get('beta')}, not 1")
    walk.current = op.outputs[0]
  if graph.outputs != (walk.current,):
    raise ValueError(f"{graph.path}: graph outputs {graph.outputs} are not the classifier's "
                     f"chain end (tensor {walk.current})")
  return params


def read_class_names(path: str | pathlib.Path, num_classes: int = 1001) -> tuple[str, ...]:
  """imagenet_labels.txt -> names, one a line (index 0 "background")."""
  path = pathlib.Path(path)
  names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
  if len(names) != num_classes:
    raise ValueError(f"{path}: {len(names)} class names for a model with {num_classes} outputs")
  return names


def load_mobilenet_v2(path: str | pathlib.Path) -> tuple[MobileNetV2, Params, tuple[str, ...]]:
  """A MobileNetV2-1.0 ImageNet .tflite file -> (model, variables, class names).

  `variables` is {"params": ...} (float32, BN folded into conv biases) for
  `model.apply(variables, images)`; class names come from
  imagenet_labels.txt beside the file (1001 names, index 0 "background").
  Raises ValueError naming the file and operator where the graph differs.
  """
  path = pathlib.Path(path)
  model = MobileNetV2()
  params = _params_from_graph(tflite_weights.read_tflite(path), model.num_classes)
  image = jnp.zeros((1, 224, 224, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), image)["params"]
  mismatched = jax.tree.map(lambda want, got: want.shape != got.shape, shapes, params)
  if any(jax.tree.leaves(mismatched)):
    raise ValueError(f"{path}: the weights read do not have the shapes of MobileNetV2's params")
  params = jax.tree.map(lambda value: jnp.asarray(value, jnp.float32), params)
  names = read_class_names(path.parent / "imagenet_labels.txt", model.num_classes)
  return model, {"params": params}, names
