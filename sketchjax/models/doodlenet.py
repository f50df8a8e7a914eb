"""doodleNet: the pretrained 345-class QuickDraw bitmap CNN, ported from TensorFlow.js.

The published model (yining1023/doodleNet, `model-tfjs/`) is a Keras
Sequential network saved in the TensorFlow.js layers format: `model.json`
(topology and weight manifest) and float32 little-endian `.bin` shards.
`load_doodlenet` reads it with json and numpy alone, checks every layer
against what `DoodleNet` computes, and returns Flax parameters.

Input: float32[B, 28, 28, 1] = official QuickDraw bitmap / 255 (white ink,
1.0, on black, 0.0). The module returns pre-softmax logits;
`jax.nn.softmax(logits)` is the TF.js model's output.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]


class DoodleNet(nn.Module):
  """Stages of 3x3 'same' ReLU convs, each stage ending in a 2x2/2 'valid' max-pool;
  dropout; channels-last flatten; Dense tanh; Dense logits.

  Attributes:
    stage_filters: conv channels of each stage (doodleNet: 16, 32, 64).
    convs_per_stage: convs before each pool (doodleNet: 2).
    hidden_units: width of the tanh layer (doodleNet: 512).
    num_classes: outputs (doodleNet: 345).
    dropout_rate: dropout after the last pool, active only with train=True.
    image_size: input side in pixels (28x28 -> 14 -> 7 -> 3 for doodleNet).
  """

  stage_filters: Sequence[int] = (16, 32, 64)
  convs_per_stage: int = 2
  hidden_units: int = 512
  num_classes: int = 345
  dropout_rate: float = 0.1
  image_size: int = 28

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """float32[B, 28, 28, 1] in [0, 1] -> (logits [B, C], {"feature_map", "features", "logits"}).

    "feature_map" is the last pool's output [B, 3, 3, 64] (for CAM-style
    attribution), "features" the tanh layer [B, hidden_units]. With
    train=True the dropout needs a "dropout" rng.
    """
    expected = (self.image_size, self.image_size, 1)
    if images.ndim != 4 or images.shape[1:] != expected:
      raise ValueError(f"DoodleNet expects images [B, {self.image_size}, {self.image_size}, 1], "
                       f"got shape {images.shape}")
    x = images
    for stage, filters in enumerate(self.stage_filters):
      for conv in range(self.convs_per_stage):
        index = stage * self.convs_per_stage + conv
        x = nn.relu(nn.Conv(filters, (3, 3), padding="SAME", name=f"conv{index}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    feature_map = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)  # channels-last (H, W, C) order, as Keras' Flatten
    features = jnp.tanh(nn.Dense(self.hidden_units, name="hidden")(x))
    logits = nn.Dense(self.num_classes, name="classifier")(features)
    return logits, {"feature_map": feature_map, "features": features, "logits": logits}


# Layer settings DoodleNet implements; model.json must match them exactly.
_CONV_SETTINGS = {"kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
                  "dilation_rate": [1, 1], "activation": "relu", "use_bias": True,
                  "data_format": "channels_last"}
_POOL_SETTINGS = {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid",
                  "data_format": "channels_last"}
_DROPOUT_SETTINGS = {"noise_shape": None}
_FLATTEN_SETTINGS = {"data_format": "channels_last"}
_HIDDEN_SETTINGS = {"activation": "tanh", "use_bias": True}
_CLASSIFIER_SETTINGS = {"activation": "softmax", "use_bias": True}


def _layer_classes(model: DoodleNet) -> list[str]:
  """Keras class names, in order, of the Sequential model equal to `model`."""
  stage = ["Conv2D"] * model.convs_per_stage + ["MaxPooling2D"]
  return stage * len(model.stage_filters) + ["Dropout", "Flatten", "Dense", "Dense"]


def _check_settings(path: pathlib.Path, index: int, layer: dict[str, Any],
                    settings: dict[str, Any]) -> None:
  config = layer["config"]
  for key, supported in settings.items():
    if config.get(key) != supported:
      raise ValueError(f"{path}: layer {index} '{config.get('name')}' ({layer['class_name']}) "
                       f"has {key}={config.get(key)!r}; the DoodleNet loader supports only "
                       f"{supported!r}")


def _parse_topology(path: pathlib.Path, spec: dict[str, Any]) -> tuple[DoodleNet, dict[str, str]]:
  """model.json contents -> (DoodleNet, {Keras layer name: Flax module name})."""
  topology = spec.get("modelTopology", {})
  model_config = topology.get("model_config", topology)
  model_class = model_config.get("class_name")
  if spec.get("format", "layers-model") != "layers-model" or model_class != "Sequential":
    raise ValueError(f"{path}: expected a TensorFlow.js layers-model of a Keras Sequential, got "
                     f"format={spec.get('format')!r}, class_name={model_class!r}")
  config = model_config["config"]
  layers = config["layers"] if isinstance(config, dict) else config
  classes = [layer["class_name"] for layer in layers]
  conv_filters = [layer["config"]["filters"] for layer in layers if layer["class_name"] == "Conv2D"]
  pools = classes.count("MaxPooling2D")
  if pools == 0 or len(conv_filters) % pools:
    raise ValueError(f"{path}: layers {classes} are not stages of convs each ending in a max-pool")
  convs_per_stage = len(conv_filters) // pools
  stage_filters = conv_filters[convs_per_stage - 1::convs_per_stage]
  dense_units = [layer["config"]["units"] for layer in layers if layer["class_name"] == "Dense"]
  dropout_rates = [layer["config"]["rate"] for layer in layers if layer["class_name"] == "Dropout"]
  input_shape = layers[0]["config"].get("batch_input_shape")
  if (len(dense_units) != 2 or len(dropout_rates) != 1 or input_shape is None
      or len(input_shape) != 4 or input_shape[1] != input_shape[2] or input_shape[3] != 1):
    raise ValueError(f"{path}: layers {classes} with input shape {input_shape} are not the "
                     "doodleNet layout (convs, pools, Dropout, Flatten, Dense, Dense on "
                     "[B, S, S, 1])")
  model = DoodleNet(stage_filters=tuple(stage_filters), convs_per_stage=convs_per_stage,
                    hidden_units=dense_units[0], num_classes=dense_units[1],
                    dropout_rate=dropout_rates[0], image_size=input_shape[1])
  if classes != _layer_classes(model):
    raise ValueError(f"{path}: layer sequence {classes} differs from the DoodleNet layout "
                     f"{_layer_classes(model)}")
  expected_filters = [f for f in stage_filters for _ in range(convs_per_stage)]
  if conv_filters != expected_filters:
    raise ValueError(f"{path}: conv filters {conv_filters} change within a stage; the DoodleNet "
                     f"loader supports equal filters within each stage ({expected_filters})")
  module_names = {}
  dense_names = iter(["hidden", "classifier"])
  conv_index = 0
  for index, layer in enumerate(layers):
    kind, name = layer["class_name"], layer["config"]["name"]
    if kind == "Conv2D":
      _check_settings(path, index, layer, _CONV_SETTINGS)
      module_names[name] = f"conv{conv_index}"
      conv_index += 1
    elif kind == "MaxPooling2D":
      _check_settings(path, index, layer, _POOL_SETTINGS)
    elif kind == "Dropout":
      _check_settings(path, index, layer, _DROPOUT_SETTINGS)
    elif kind == "Flatten":
      _check_settings(path, index, layer, _FLATTEN_SETTINGS)
    else:
      module_names[name] = next(dense_names)
      settings = _HIDDEN_SETTINGS if module_names[name] == "hidden" else _CLASSIFIER_SETTINGS
      _check_settings(path, index, layer, settings)
  return model, module_names


def read_tfjs_weights(folder: str | pathlib.Path) -> dict[str, np.ndarray]:
  """All weights of a TF.js `model.json`'s weightsManifest -> {name: float32 array}.

  Each manifest group's shards (`paths`, in order) are concatenated and its
  weights read back to back. Raises on a missing shard, a dtype other than
  float32 (or a quantised weight), or a byte count that does not match.
  """
  folder = pathlib.Path(folder)
  json_path = folder / "model.json"
  spec = json.loads(json_path.read_text())
  weights = {}
  for group in spec.get("weightsManifest", []):
    shard_paths = [folder / shard for shard in group["paths"]]
    for shard_path in shard_paths:
      if not shard_path.is_file():
        raise FileNotFoundError(f"{shard_path}: weight shard listed in {json_path} is missing")
    data = b"".join(shard_path.read_bytes() for shard_path in shard_paths)
    shard_names = ", ".join(str(p) for p in shard_paths)
    offset = 0
    for entry in group["weights"]:
      name, shape = entry["name"], tuple(entry["shape"])
      if entry.get("dtype") != "float32" or "quantization" in entry:
        raise ValueError(f"{json_path}: weight '{name}' has dtype {entry.get('dtype')!r}"
                         f"{' (quantised)' if 'quantization' in entry else ''}; only unquantised "
                         "float32 is supported")
      size = math.prod(shape) * 4
      if offset + size > len(data):
        raise ValueError(f"{shard_names}: hold {len(data)} bytes, but {json_path} needs "
                         f"{offset + size} by the end of weight '{name}' {shape}")
      weights[name] = np.frombuffer(data, "<f4", math.prod(shape), offset).reshape(shape)
      offset += size
    if offset != len(data):
      raise ValueError(f"{shard_names}: hold {len(data)} bytes, but the weights {json_path} "
                       f"lists for them take {offset}")
  return weights


def _read_class_names(path: pathlib.Path, num_classes: int) -> tuple[str, ...]:
  names = tuple(line.strip().replace("_", " ") for line in path.read_text().splitlines()
                if line.strip())
  if len(names) != num_classes:
    raise ValueError(f"{path}: {len(names)} class names for a model with {num_classes} outputs")
  return names


def load_doodlenet(folder: str | pathlib.Path) -> tuple[DoodleNet, Params, tuple[str, ...]]:
  """Folder with model.json, its .bin shards and class_names.txt -> (model, variables, names).

  `variables` is {"params": ...} for `model.apply(variables, images)`.
  `names[i]` is the class of output i, in the model's own order (not the
  sorted official order), written as the official QuickDraw category name
  (class_names.txt's underscores become spaces: "alarm clock").
  """
  folder = pathlib.Path(folder)
  json_path = folder / "model.json"
  model, module_names = _parse_topology(json_path, json.loads(json_path.read_text()))
  weights = read_tfjs_weights(folder)
  image = jnp.zeros((1, model.image_size, model.image_size, 1), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), image)["params"]
  params = {}
  for keras_name, module_name in module_names.items():
    params[module_name] = {}
    for kind, shape in shapes[module_name].items():
      weight_name = f"{keras_name}/{kind}"
      if weight_name not in weights:
        raise ValueError(f"{json_path}: weightsManifest has no weight '{weight_name}' "
                         f"(needed by layer '{keras_name}')")
      weight = weights.pop(weight_name)
      if weight.shape != shape.shape:
        raise ValueError(f"{json_path}: weight '{weight_name}' has shape {weight.shape}, "
                         f"layer '{keras_name}' needs {shape.shape}")
      params[module_name][kind] = jnp.asarray(weight)
  if weights:
    raise ValueError(f"{json_path}: weightsManifest has weights no layer uses: {sorted(weights)}")
  names = _read_class_names(folder / "class_names.txt", model.num_classes)
  return model, {"params": params}, names
