"""QuickDraw `full/binary/<category>.bin`: simplified drawings back to back.

Each drawing, little-endian: `key_id` uint64, `countrycode` 2 ASCII bytes,
`recognized` int8, `timestamp` uint32 (unix seconds), `n_strokes` uint16, then
per stroke `n_points` uint16, `n_points` x bytes, `n_points` y bytes (uint8).

The format keeps whole seconds only: ndjson timestamps such as
"2017-03-02 23:25:10.07453 UTC" are written truncated to the second and read
back as "2017-03-02 23:25:10 UTC", so bin -> ndjson -> bin is exact. An empty
timestamp is written as 0 and 0 is read back as "".
"""

from __future__ import annotations

import calendar
import datetime
import os
import re
import struct
from typing import Iterable, Iterator

import numpy as np

from sketchjax.data.formats import atomic_output
from sketchjax.data.records import BadInputPolicy, Drawing, SketchFormatError, validate_sketch
from sketchjax.sketch.sketch import Sketch

_HEADER = struct.Struct("<Q2sbIH")  # key_id, countrycode, recognized, timestamp, n_strokes
_COUNT = struct.Struct("<H")
_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(\.\d+)? UTC")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def read_binary(path: str | os.PathLike, *, word: str = "",
                policy: BadInputPolicy | None = None) -> Iterator[Drawing]:
  """Yields the drawings of a `.bin` file; every drawing gets `word`.

  A truncated drawing raises (or, under a "skip" policy, is counted and ends
  the file) a `SketchFormatError` naming the 0-based drawing index and the
  byte offset; an invalid sketch (e.g. a stroke of zero points) is skipped
  alone under a "skip" policy.
  """
  policy = policy or BadInputPolicy()
  with open(path, "rb") as f:
    data = f.read()
  offset, index = 0, 0
  while offset < len(data):
    try:
      drawing, offset = _parse_drawing(data, offset, word)
    except _Truncated as e:
      policy.handle(SketchFormatError(path, index, str(e)))
      return
    try:
      validate_sketch(drawing.sketch)
    except ValueError as e:
      policy.handle(SketchFormatError(path, index, str(e)))
    else:
      yield drawing
    index += 1


def write_binary(path: str | os.PathLike, drawings: Iterable[Drawing]) -> None:
  """Writes simplified drawings; raises `SketchFormatError` (drawing index) if
  a value does not fit the format (coordinates must be integers 0..255)."""
  with atomic_output(path) as tmp, open(tmp, "wb") as f:
    for index, drawing in enumerate(drawings):
      try:
        f.write(_pack_drawing(drawing))
      except (ValueError, OverflowError, struct.error) as e:
        raise SketchFormatError(path, index, str(e)) from None


def timestamp_to_unix(timestamp: str) -> int:
  """"2017-03-02 23:25:10.07453 UTC" -> whole unix seconds; "" -> 0."""
  if not timestamp:
    return 0
  match = _TIMESTAMP.fullmatch(timestamp)
  if not match:
    raise ValueError(f"bad timestamp: {timestamp!r} is not 'YYYY-MM-DD HH:MM:SS[.ffff] UTC'")
  parsed = datetime.datetime.strptime(match.group(1), _TIME_FORMAT)
  return calendar.timegm(parsed.timetuple())


def unix_to_timestamp(seconds: int) -> str:
  """Unix seconds -> "2017-03-02 23:25:10 UTC"; 0 -> ""."""
  if not seconds:
    return ""
  when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
  return when.strftime(_TIME_FORMAT) + " UTC"


class _Truncated(ValueError):
  pass


def _check_size(data: bytes, offset: int, size: int) -> None:
  """Raises _Truncated unless `size` bytes follow `offset`."""
  if offset + size > len(data):
    raise _Truncated(f"truncated record: needs {size} bytes at byte offset {offset}, "
                     f"file has {len(data) - offset} left")


def _parse_drawing(data: bytes, offset: int, word: str) -> tuple[Drawing, int]:
  """The drawing at `offset` and the offset after it."""
  _check_size(data, offset, _HEADER.size)
  key_id, countrycode, recognized, timestamp, n_strokes = _HEADER.unpack_from(data, offset)
  offset += _HEADER.size
  strokes = []
  for _ in range(n_strokes):
    _check_size(data, offset, _COUNT.size)
    (n_points,) = _COUNT.unpack_from(data, offset)
    offset += _COUNT.size
    _check_size(data, offset, 2 * n_points)
    xy = np.frombuffer(data, np.uint8, 2 * n_points, offset).reshape(2, n_points)
    strokes.append(xy.T.astype(np.float64))
    offset += 2 * n_points
  drawing = Drawing(
      sketch=Sketch(tuple(strokes)),
      word=word,
      key_id=key_id,
      countrycode=countrycode.rstrip(b"\0").decode("ascii", errors="replace"),
      recognized=bool(recognized),
      timestamp=unix_to_timestamp(timestamp))
  return drawing, offset


def _pack_drawing(drawing: Drawing) -> bytes:
  sketch = drawing.sketch
  validate_sketch(sketch)
  if sketch.times is not None:
    raise ValueError("raw drawing: the binary format holds simplified drawings "
                     "only; drop the times first")
  if not (drawing.countrycode.isascii() and len(drawing.countrycode) <= 2):
    raise ValueError(f"bad countrycode: {drawing.countrycode!r} is not at most 2 ASCII characters")
  countrycode = drawing.countrycode.encode("ascii")
  if not 0 <= drawing.key_id < 2**64:
    raise ValueError(f"bad key_id: {drawing.key_id} does not fit uint64")
  if sketch.num_strokes >= 2**16:
    raise ValueError(f"too many strokes: {sketch.num_strokes} does not fit uint16")
  parts = [_HEADER.pack(drawing.key_id, countrycode.ljust(2, b"\0"), drawing.recognized,
                        timestamp_to_unix(drawing.timestamp), sketch.num_strokes)]
  for i, stroke in enumerate(sketch.strokes):
    if len(stroke) >= 2**16:
      raise ValueError(f"too many points: stroke {i} has {len(stroke)}, more than uint16")
    if not (np.array_equal(stroke, np.round(stroke)) and stroke.min() >= 0 and stroke.max() <= 255):
      raise ValueError(f"coordinate out of uint8: stroke {i} has coordinates that are not "
                       f"integers in 0..255 (range {stroke.min():g}..{stroke.max():g}); "
                       "the binary format holds simplified 0..255 drawings")
    parts.append(_COUNT.pack(len(stroke)))
    parts.append(stroke.T.astype(np.uint8).tobytes())
  return b"".join(parts)
