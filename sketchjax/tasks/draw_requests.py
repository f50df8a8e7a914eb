"""The assisted-drawing page's requests: parsed and checked before any model sees them.

A request body is JSON: `{"strokes": [[[x, y], ...], ...], "target": null | "<class>",
"seed": <int>}` (`target` and `seed` optional). Anything else raises `BadRequest`
with the HTTP status to answer (400 unreadable, 413 too large, 422 wrong shape or
value) and a message naming the offending field, e.g. `strokes[2][5]`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence

import numpy as np

_FIELDS = ("strokes", "target", "seed")


class BadRequest(ValueError):
  """A request the server refuses; `status` is the HTTP status to answer."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
  """The largest request served (a drawing is far smaller)."""

  max_body_bytes: int = 1_000_000
  max_strokes: int = 64
  max_points: int = 10_000
  max_coordinate: float = 1e6


@dataclasses.dataclass(frozen=True)
class DrawRequest:
  """A checked request: strokes float64[n_k, 2] (n_k >= 1), target (None = top class)."""

  strokes: list[np.ndarray]
  target: str | None
  seed: int


def _refuse_constant(name: str) -> Any:
  raise BadRequest(422, f"{name} is not a number: coordinates must be finite")


def read_json(body: bytes, limits: Limits) -> Any:
  """Body bytes -> the JSON value; 413 when too long, 400 when not JSON, 422 for NaN."""
  if len(body) > limits.max_body_bytes:
    raise BadRequest(413, f"request body of {len(body)} bytes, at most {limits.max_body_bytes}")
  try:
    return json.loads(body, parse_constant=_refuse_constant)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise BadRequest(400, f"malformed JSON: {error}") from error


def _number(value: Any, where: str, limits: Limits) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise BadRequest(422, f"{where}: expected a number, got {type(value).__name__}")
  if not math.isfinite(value) or abs(value) > limits.max_coordinate:
    raise BadRequest(422, f"{where}: {value} is not a finite coordinate within "
                          f"+-{limits.max_coordinate:g}")
  return float(value)


def parse_strokes(value: Any, limits: Limits) -> list[np.ndarray]:
  """`[[[x, y], ...], ...]` -> polylines float64[n_k, 2]; sizes checked before values."""
  if not isinstance(value, list):
    raise BadRequest(422, f"strokes: expected a list of strokes, got {type(value).__name__}")
  if not value:
    raise BadRequest(422, "strokes is empty: draw a stroke first")
  if len(value) > limits.max_strokes:
    raise BadRequest(413, f"{len(value)} strokes, at most {limits.max_strokes}")
  for k, stroke in enumerate(value):
    if not isinstance(stroke, list):
      raise BadRequest(422, f"strokes[{k}]: expected a list of [x, y] points, got "
                            f"{type(stroke).__name__}")
    if not stroke:
      raise BadRequest(422, f"strokes[{k}] is empty: a stroke has at least one point")
  total = sum(len(stroke) for stroke in value)
  if total > limits.max_points:
    raise BadRequest(413, f"{total} points, at most {limits.max_points}")
  strokes = []
  for k, stroke in enumerate(value):
    for i, point in enumerate(stroke):
      if not isinstance(point, list) or len(point) != 2:
        raise BadRequest(422, f"strokes[{k}][{i}]: expected [x, y], got {json.dumps(point)[:40]}")
    strokes.append(np.array([[_number(v, f"strokes[{k}][{i}]", limits) for v in point]
                             for i, point in enumerate(stroke)], np.float64))
  return strokes


def parse_request(body: bytes, limits: Limits, class_names: Sequence[str]) -> DrawRequest:
  """A request body -> `DrawRequest`, or `BadRequest`."""
  value = read_json(body, limits)
  if not isinstance(value, dict):
    raise BadRequest(422, f"expected a JSON object with {list(_FIELDS)}, got "
                          f"{type(value).__name__}")
  unknown = sorted(set(value) - set(_FIELDS))
  if unknown:
    raise BadRequest(422, f"unknown fields {unknown}; expected {list(_FIELDS)}")
  if "strokes" not in value:
    raise BadRequest(422, "missing field 'strokes'")
  target = value.get("target")
  if target is not None and not isinstance(target, str):
    raise BadRequest(422, f"target: expected a class name or null, got {type(target).__name__}")
  if target is not None and target not in class_names:
    raise BadRequest(422, f"unknown target {target[:60]!r}; GET /api/classes lists the classes")
  seed = value.get("seed", 0)
  if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
    raise BadRequest(422, f"seed: expected an integer in [0, 2^31), got {json.dumps(seed)[:40]}")
  return DrawRequest(parse_strokes(value["strokes"], limits), target, seed)
