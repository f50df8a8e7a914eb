"""Run a TFLite graph in float32 with JAX, operator by operator, as an independent reference.

`graph_forward` evaluates the graph read by `tflite_weights.read_tflite`
directly (no Flax module, no parameter mapping), with every constant
dequantised. With `fake_quant=True` each activation is rounded to its
tensor's quantisation grid (scale, zero point, the uint8/int8 range), which
is what the integer runtime stores between operators; the gap between the
two modes is the cost of activation quantisation that a float port does
not have. Supports the operators of image classifiers like MobileNetV2:
CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D (global), MEAN,
FULLY_CONNECTED, RESHAPE, SOFTMAX, QUANTIZE, DEQUANTIZE.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.models import tflite_weights

_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}
_ACTIVATIONS = {"NONE": lambda x: x, "RELU": jax.nn.relu, "RELU6": lambda x: jnp.clip(x, 0, 6)}


def _fake_quant(x: jax.Array, tensor: tflite_weights.Tensor) -> jax.Array:
  if tensor.dtype not in _RANGES or tensor.scale is None or tensor.scale.size != 1:
    return x
  low, high = _RANGES[tensor.dtype]
  scale, zero = float(tensor.scale[0]), float(tensor.zero_point[0])
  return (jnp.clip(jnp.round(x / scale) + zero, low, high) - zero) * scale


def _conv(graph: tflite_weights.TfliteGraph, op: tflite_weights.Operator,
          x: jax.Array) -> jax.Array:
  weights = tflite_weights.weight_values(graph, op)
  depthwise = op.kind == "DEPTHWISE_CONV_2D"
  if depthwise and op.options["depth_multiplier"] != 1:
    raise ValueError(f"{graph.path}: operator {op.index} has depth multiplier "
                     f"{op.options['depth_multiplier']}; only 1 is supported")
  kernel = weights.transpose(1, 2, 0, 3) if depthwise else weights.transpose(1, 2, 3, 0)
  y = jax.lax.conv_general_dilated(
      x, jnp.asarray(kernel), op.options["stride"], op.options["padding"],
      rhs_dilation=op.options["dilation"], dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1] if depthwise else 1,
      precision=jax.lax.Precision.HIGHEST)
  return y + tflite_weights.bias_values(graph, op, kernel.shape[-1])


def _apply(graph: tflite_weights.TfliteGraph, op: tflite_weights.Operator,
           inputs: list[jax.Array]) -> jax.Array:
  x = inputs[0]
  if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
    y = _conv(graph, op, x)
  elif op.kind == "FULLY_CONNECTED":
    weights = tflite_weights.weight_values(graph, op)
    y = x.reshape(-1, weights.shape[1]) @ weights.T
    y = y + tflite_weights.bias_values(graph, op, weights.shape[0])
  elif op.kind == "ADD":
    y = inputs[0] + inputs[1]
  elif op.kind == "AVERAGE_POOL_2D":
    if op.options["filter"] != x.shape[1:3] or op.options["padding"] != "VALID":
      raise ValueError(f"{graph.path}: operator {op.index} is a windowed average pool; only the "
                       "global one is supported")
    y = x.mean(axis=(1, 2), keepdims=True)
  elif op.kind == "MEAN":
    axes = tuple(int(a) for a in np.ravel(tflite_weights.constant(graph, op.inputs[1]).data))
    y = x.mean(axis=axes, keepdims=bool(op.options["keep_dims"]))
  elif op.kind == "RESHAPE":
    y = x.reshape((x.shape[0],) + graph.tensors[op.outputs[0]].shape[1:])
  elif op.kind == "SOFTMAX":
    y = jax.nn.softmax(op.options["beta"] * x, axis=-1)
  elif op.kind in ("QUANTIZE", "DEQUANTIZE"):
    y = x
  else:
    raise ValueError(f"{graph.path}: operator {op.index} ({op.kind}) is not supported by the "
                     "float reference")
  return _ACTIVATIONS[op.options.get("activation", "NONE")](y)


def graph_forward(graph: tflite_weights.TfliteGraph, inputs: jax.Array, *,
                  fake_quant: bool = False) -> jax.Array:
  """float32 inputs [B, ...] of the graph's (single) input -> float32 of its (single) output.

  For a quantised input, pass the dequantised values (q - zero_point) * scale.
  """
  values = {graph.inputs[0]: jnp.asarray(inputs, jnp.float32)}
  for op in graph.operators:
    args = [values[i] for i in op.inputs if i in values]  # activations; constants read by _apply
    y = _apply(graph, op, args)
    values[op.outputs[0]] = _fake_quant(y, graph.tensors[op.outputs[0]]) if fake_quant else y
  return values[graph.outputs[0]]


def litert_probabilities(path: str | pathlib.Path,
                         images: np.ndarray) -> tuple[np.ndarray, tuple[float, int]]:
  """The official runtime's output: LiteRT's dequantised probabilities [N, 1001] of
  uint8 images [N, 224, 224, 3], one image an invoke (its XNNPACK delegate cannot
  resize these graphs to a batch), and the input quantisation (scale, zero point).
  Needs `ai-edge-litert` (a test dependency)."""
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
  interpreter = Interpreter(model_path=str(path))
  interpreter.allocate_tensors()
  (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
  if inp["dtype"] != np.uint8 or outp["dtype"] != np.uint8:
    raise ValueError(f"{path}: expected uint8 input and output, got {inp['dtype']} and "
                     f"{outp['dtype']}")
  rows = []
  for image in images:
    interpreter.set_tensor(inp["index"], image[None])
    interpreter.invoke()
    rows.append(interpreter.get_tensor(outp["index"])[0])
  scale, zero = outp["quantization"]
  return (np.stack(rows).astype(np.float32) - zero) * scale, inp["quantization"]
