"""QuickDraw ndjson: one JSON object a line, simplified or raw.

Simplified strokes are `[[xs], [ys]]` (integers 0..255); raw strokes are
`[[xs], [ys], [ts]]` with `ts` in milliseconds from the drawing's first point,
read into `Sketch.times`. Other fields: `word`, `countrycode`, `timestamp`,
`recognized`, `key_id` (a decimal string in the official files).
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Iterator

import numpy as np

from sketchjax.data.formats import atomic_output
from sketchjax.data.records import BadInputPolicy, Drawing, SketchFormatError, validate_sketch
from sketchjax.sketch.sketch import Sketch


def read_ndjson(path: str | os.PathLike, *,
                policy: BadInputPolicy | None = None) -> Iterator[Drawing]:
  """Yields the drawings of an ndjson file, in file order.

  A bad line raises (or, under a "skip" policy, is counted and passed over)
  a `SketchFormatError` naming the file and the 1-based line number. Blank
  lines are ignored.
  """
  policy = policy or BadInputPolicy()
  with open(path, "rb") as f:
    for line_number, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
        if not line.strip():
          continue
        yield _parse_line(line)
      except UnicodeDecodeError as e:
        policy.handle(SketchFormatError(path, line_number, f"not UTF-8 text: {e}"))
      except ValueError as e:
        policy.handle(SketchFormatError(path, line_number, str(e)))


def write_ndjson(path: str | os.PathLike, drawings: Iterable[Drawing]) -> None:
  """Writes drawings as official ndjson; raw strokes where `sketch.times` is set.

  Coordinates and times are written as integers when integral. Raises
  `SketchFormatError` (naming the 0-based drawing index) for an invalid sketch.
  """
  with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    for index, drawing in enumerate(drawings):
      try:
        validate_sketch(drawing.sketch)
      except ValueError as e:
        raise SketchFormatError(path, index, str(e)) from None
      record = {
          "word": drawing.word,
          "countrycode": drawing.countrycode,
          "timestamp": drawing.timestamp,
          "recognized": drawing.recognized,
          "key_id": str(drawing.key_id),
          "drawing": _strokes_to_json(drawing.sketch),
      }
      f.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")


def _parse_line(line: str) -> Drawing:
  """One ndjson line as a Drawing; ValueError("<kind>: <detail>") if bad."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"malformed JSON: {e}") from None
  if not isinstance(record, dict):
    raise ValueError(f"not a JSON object: got {type(record).__name__}")
  if "drawing" not in record:
    raise ValueError(f"missing field: no 'drawing' (fields: {sorted(record)})")
  sketch = validate_sketch(_parse_strokes(record["drawing"]))
  try:
    key_id = int(record.get("key_id", 0))
  except (TypeError, ValueError):
    raise ValueError(f"bad key_id: {record['key_id']!r} is not an integer") from None
  return Drawing(
      sketch=sketch,
      word=str(record.get("word", "")),
      key_id=key_id,
      countrycode=str(record.get("countrycode", "")),
      recognized=bool(record.get("recognized", True)),
      timestamp=str(record.get("timestamp", "")))


def _parse_strokes(strokes) -> Sketch:
  """`[[xs], [ys](, [ts])]` per stroke to a Sketch (times only if all raw)."""
  if not isinstance(strokes, list):
    raise ValueError(f"bad drawing: expected a list of strokes, got {type(strokes).__name__}")
  arrays = []
  for i, stroke in enumerate(strokes):
    try:
      array = np.array(stroke)
    except ValueError:
      raise ValueError(f"ragged stroke: stroke {i} has lists of different lengths") from None
    if array.ndim != 2 or array.shape[0] not in (2, 3):
      raise ValueError(f"bad stroke: stroke {i} is not [[xs], [ys]] or [[xs], [ys], [ts]]")
    if array.size and array.dtype.kind not in "iuf":
      raise ValueError(f"non-number: stroke {i} holds values that are not numbers")
    arrays.append(array.astype(np.float64))
  rows = {len(a) for a in arrays}
  if rows == {2, 3}:
    raise ValueError("mixed strokes: some strokes have times and some do not")
  points = tuple(a[:2].T for a in arrays)
  times = tuple(a[2] for a in arrays) if rows == {3} else None
  return Sketch(points, times)


def _strokes_to_json(sketch: Sketch) -> list:
  strokes = []
  for i, stroke in enumerate(sketch.strokes):
    columns = [stroke[:, 0], stroke[:, 1]]
    if sketch.times is not None:
      columns.append(sketch.times[i])
    strokes.append([_numbers(c) for c in columns])
  return strokes


def _numbers(values: np.ndarray) -> list:
  """Python ints when every value is integral, else floats."""
  if np.array_equal(values, np.round(values)):
    return values.astype(np.int64).tolist()
  return values.tolist()
