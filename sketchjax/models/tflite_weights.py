"""Read a TensorFlow Lite flatbuffer: its operators, tensors and dequantised constants.

The file is parsed with the `tflite` package (the generated reader of the
official TFLite schema), not by hand. `read_tflite` gives the main subgraph
as plain Python values: operators in execution order with their options
(strides, padding, fused activation), and tensors with their quantisation.
`Tensor.dequantized()` turns a constant into float32:

- uint8 / int8, per tensor or per channel: (q - zero_point) * scale, the
  scale and zero point broadcast along `quantized_dimension`;
- int32 biases: their own stored scale (TFLite stores input_scale *
  weight_scale there); `bias_values` falls back to that product where a
  bias carries no scale;
- float32 / float16: the values.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np
import tflite

_OPERATOR_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items()
                   if not name.startswith("_")}
_TENSOR_DTYPES = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
                  tflite.TensorType.INT32: np.int32, tflite.TensorType.UINT8: np.uint8,
                  tflite.TensorType.INT8: np.int8, tflite.TensorType.INT64: np.int64,
                  tflite.TensorType.INT16: np.int16}
_PADDING = {tflite.Padding.SAME: "SAME", tflite.Padding.VALID: "VALID"}
_ACTIVATIONS = {code: name for name, code in vars(tflite.ActivationFunctionType).items()
                if not name.startswith("_")}


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One tensor of the graph; `data` holds the raw values of a constant, else None."""

  index: int
  name: str
  shape: tuple[int, ...]
  dtype: np.dtype
  scale: np.ndarray | None  # float32[1] per tensor, float32[channels] per channel
  zero_point: np.ndarray | None  # int64, same shape as scale
  quantized_dimension: int
  data: np.ndarray | None

  @property
  def quantized(self) -> bool:
    return self.scale is not None

  def dequantized(self, scale: np.ndarray | None = None) -> np.ndarray:
    """float32 values of a constant; `scale` replaces the stored one (and implies zero point 0)."""
    if self.data is None:
      raise ValueError(f"tensor {self.index} '{self.name}' is not a constant")
    if scale is None and not self.quantized:
      return self.data.astype(np.float32)
    zero_point = np.zeros_like(scale, np.int64) if scale is not None else self.zero_point
    scale = self.scale if scale is None else scale
    shape = [1] * self.data.ndim
    if scale.size > 1:
      if self.data.shape[self.quantized_dimension] != scale.size:
        raise ValueError(f"tensor {self.index} '{self.name}' {self.data.shape} has {scale.size} "
                         f"scales along dimension {self.quantized_dimension}")
      shape[self.quantized_dimension] = scale.size
    values = self.data.astype(np.float64) - zero_point.reshape(shape)
    return (values * scale.astype(np.float64).reshape(shape)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Operator:
  """One operator: `kind` is the builtin name ("CONV_2D"), `options` its parsed options.

  Options used here: "padding" ("SAME"/"VALID"), "stride" (h, w), "dilation"
  (h, w), "filter" (h, w) of pools, "activation" ("NONE", "RELU6", ...),
  "depth_multiplier", "keep_dims", "beta" (softmax).
  """

  index: int
  kind: str
  inputs: tuple[int, ...]  # -1 marks an absent optional input
  outputs: tuple[int, ...]
  options: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TfliteGraph:
  path: pathlib.Path
  tensors: tuple[Tensor, ...]
  operators: tuple[Operator, ...]
  inputs: tuple[int, ...]
  outputs: tuple[int, ...]


def _options(op: Any, kind: str) -> dict[str, Any]:
  table = op.BuiltinOptions()
  if table is None:
    return {}
  if kind == "CONV_2D":
    o = tflite.Conv2DOptions()
    o.Init(table.Bytes, table.Pos)
    return {"padding": _PADDING[o.Padding()], "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "activation": _ACTIVATIONS[o.FusedActivationFunction()]}
  if kind == "DEPTHWISE_CONV_2D":
    o = tflite.DepthwiseConv2DOptions()
    o.Init(table.Bytes, table.Pos)
    return {"padding": _PADDING[o.Padding()], "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "depth_multiplier": o.DepthMultiplier(),
            "activation": _ACTIVATIONS[o.FusedActivationFunction()]}
  if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
    o = tflite.Pool2DOptions()
    o.Init(table.Bytes, table.Pos)
    return {"padding": _PADDING[o.Padding()], "stride": (o.StrideH(), o.StrideW()),
            "filter": (o.FilterHeight(), o.FilterWidth()),
            "activation": _ACTIVATIONS[o.FusedActivationFunction()]}
  if kind == "FULLY_CONNECTED":
    o = tflite.FullyConnectedOptions()
    o.Init(table.Bytes, table.Pos)
    return {"activation": _ACTIVATIONS[o.FusedActivationFunction()], "keep_dims": o.KeepNumDims()}
  if kind == "ADD":
    o = tflite.AddOptions()
    o.Init(table.Bytes, table.Pos)
    return {"activation": _ACTIVATIONS[o.FusedActivationFunction()]}
  if kind == "MEAN":
    o = tflite.ReducerOptions()
    o.Init(table.Bytes, table.Pos)
    return {"keep_dims": o.KeepDims()}
  if kind == "SOFTMAX":
    o = tflite.SoftmaxOptions()
    o.Init(table.Bytes, table.Pos)
    return {"beta": o.Beta()}
  return {}


def _tensor(model: Any, graph: Any, index: int) -> Tensor:
  t = graph.Tensors(index)
  if t.Type() not in _TENSOR_DTYPES:
    raise ValueError(f"tensor {index} '{t.Name().decode()}' has TFLite type {t.Type()}, which "
                     "this reader does not support")
  dtype = np.dtype(_TENSOR_DTYPES[t.Type()]).newbyteorder("<")
  shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
  raw = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() > 0 else 0
  data = None
  if not isinstance(raw, int) and raw.size:  # DataAsNumpy gives 0 for an empty buffer
    data = np.frombuffer(raw.tobytes(), dtype).reshape(shape).astype(dtype.newbyteorder("="))
  scale = zero_point = None
  quantized_dimension = 0
  q = t.Quantization()
  if q is not None and q.ScaleLength():
    scale = q.ScaleAsNumpy().astype(np.float32)
    zero_point = (q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength()
                  else np.zeros(scale.shape, np.int64))
    quantized_dimension = q.QuantizedDimension()
  return Tensor(index, t.Name().decode(), shape, dtype.newbyteorder("="), scale, zero_point,
                quantized_dimension, data)


def read_tflite(path: str | pathlib.Path) -> TfliteGraph:
  """The first subgraph of a .tflite file, with every tensor and operator."""
  path = pathlib.Path(path)
  buffer = path.read_bytes()
  if len(buffer) < 8 or buffer[4:8] != b"TFL3":
    raise ValueError(f"{path}: not a TensorFlow Lite flatbuffer (no 'TFL3' identifier)")
  model = tflite.Model.GetRootAsModel(buffer, 0)
  if model.SubgraphsLength() < 1:
    raise ValueError(f"{path}: the model has no subgraph")
  graph = model.Subgraphs(0)
  try:
    tensors = tuple(_tensor(model, graph, i) for i in range(graph.TensorsLength()))
  except ValueError as error:
    raise ValueError(f"{path}: {error}") from None
  operators = []
  for index in range(graph.OperatorsLength()):
    op = graph.Operators(index)
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    kind = _OPERATOR_NAMES.get(builtin, f"BUILTIN_{builtin}")
    if kind == "CUSTOM":
      kind = f"CUSTOM:{code.CustomCode().decode()}"
    operators.append(Operator(index, kind, tuple(int(i) for i in op.InputsAsNumpy()),
                              tuple(int(i) for i in op.OutputsAsNumpy()), _options(op, kind)))
  return TfliteGraph(path, tensors, tuple(operators), tuple(int(i) for i in graph.InputsAsNumpy()),
                     tuple(int(i) for i in graph.OutputsAsNumpy()))


def constant(graph: TfliteGraph, index: int) -> Tensor:
  """The constant tensor `index`, looking through a DEQUANTIZE of a constant (float16 weights)."""
  tensor = graph.tensors[index]
  if tensor.data is not None:
    return tensor
  for op in graph.operators:
    if op.kind == "DEQUANTIZE" and op.outputs == (index,):
      source = graph.tensors[op.inputs[0]]
      if source.data is not None:
        return source
  raise ValueError(f"{graph.path}: tensor {index} '{tensor.name}' is not a constant")


def weight_values(graph: TfliteGraph, op: Operator) -> np.ndarray:
  """float32 weights (the operator's second input)."""
  return constant(graph, op.inputs[1]).dequantized()


def bias_values(graph: TfliteGraph, op: Operator, channels: int) -> np.ndarray:
  """float32[channels] bias (third input); zeros where absent; int32 with its stored scale,
  or input_scale * weight_scale where it stores none."""
  if len(op.inputs) < 3 or op.inputs[2] < 0:
    return np.zeros(channels, np.float32)
  bias = constant(graph, op.inputs[2])
  if bias.dtype == np.int32 and not bias.quantized:
    activation, weight = graph.tensors[op.inputs[0]], constant(graph, op.inputs[1])
    if not (activation.quantized and weight.quantized):
      raise ValueError(f"{graph.path}: operator {op.index} ({op.kind}) has an int32 bias without "
                       "a scale, and its input or weight is not quantised either")
    return bias.dequantized(scale=activation.scale * weight.scale)
  return bias.dequantized()
