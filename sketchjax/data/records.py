"""A drawing with its QuickDraw metadata, input validation and bad-input policy.

Every reader turns a broken record into a `SketchFormatError` that names the
file, the record and what is wrong, and hands it to a `BadInputPolicy`, which
either raises it (the default) or counts it and lets the reader go on.
"""

from __future__ import annotations

import collections
import dataclasses
import os

from absl import logging
import numpy as np

from sketchjax.sketch.sketch import Sketch


@dataclasses.dataclass(frozen=True)
class Drawing:
  """One drawing and its QuickDraw metadata.

  Attributes:
    sketch: the strokes (0..255 units for simplified QuickDraw).
    word: the category, e.g. "alarm clock".
    key_id: the drawing's unique id.
    countrycode: two-letter country code, e.g. "US".
    recognized: whether the game recognised the drawing.
    timestamp: as written in ndjson, e.g. "2017-03-02 23:25:10.07453 UTC".
  """

  sketch: Sketch
  word: str
  key_id: int = 0
  countrycode: str = ""
  recognized: bool = True
  timestamp: str = ""


class SketchFormatError(ValueError):
  """A bad record in a sketch file: `<path>:<record>: <reason>`.

  `record` is the 1-based line number for ndjson, the 0-based drawing index for
  `.bin`, `"<split>[i]"` for sketch-rnn `.npz`, and None for the whole file.
  By convention `reason` reads `"<kind>: <detail>"`; the kind is what
  `BadInputPolicy` counts.
  """

  def __init__(self, path: str | os.PathLike, record: int | str | None, reason: str):
    self.path = str(path)
    self.record = record
    self.reason = reason
    where = self.path if record is None else f"{self.path}:{record}"
    super().__init__(f"{where}: {reason}")

  @property
  def kind(self) -> str:
    """The reason up to its first colon, e.g. "malformed JSON"."""
    return self.reason.split(":", 1)[0]


_ON_ERROR = ("raise", "skip")


@dataclasses.dataclass
class BadInputPolicy:
  """What readers do with a bad record: raise it, or skip and count it.

  Attributes:
    on_error: "raise" (stop at the first bad record) or "skip".
    counts: skipped records per reason kind (see `SketchFormatError.kind`).
  """

  on_error: str = "raise"
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def __post_init__(self):
    if self.on_error not in _ON_ERROR:
      raise ValueError(f"on_error must be one of {_ON_ERROR}, got {self.on_error!r}")

  def handle(self, error: SketchFormatError) -> None:
    """Raises `error` in "raise" mode; else counts it, logging each kind once."""
    if self.on_error == "raise":
      raise error
    self.counts[error.kind] += 1
    if self.counts[error.kind] == 1:
      logging.warning("skipping bad record (further ones of this kind are only "
                      "counted): %s", error)

  def summary(self) -> str:
    """One line: how many records were skipped, per kind."""
    total = sum(self.counts.values())
    if not total:
      return "no bad records skipped"
    kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.counts.items()))
    return f"skipped {total} bad record(s) ({kinds})"


def validate_sketch(sketch: Sketch, *, max_abs_coord: float = 1e5) -> Sketch:
  """Returns `sketch` unchanged, or raises ValueError saying what is wrong.

  Rejected: no strokes, a stroke with no points, a NaN or infinite coordinate
  or time, a coordinate beyond `max_abs_coord` in absolute value. A one-point
  stroke (a dot) is legal.
  """
  if not sketch.strokes:
    raise ValueError("empty drawing: no strokes")
  for i, stroke in enumerate(sketch.strokes):
    if not len(stroke):
      raise ValueError(f"empty stroke: stroke {i} has no points")
    finite = np.isfinite(stroke)
    if not finite.all():
      point = int(np.flatnonzero(~finite.all(axis=1))[0])
      raise ValueError(f"non-finite coordinate: stroke {i} point {point} is "
                       f"{stroke[point].tolist()}")
    too_far = np.abs(stroke) > max_abs_coord
    if too_far.any():
      point = int(np.flatnonzero(too_far.any(axis=1))[0])
      raise ValueError(f"absurd coordinate: stroke {i} point {point} is "
                       f"{stroke[point].tolist()}, beyond +-{max_abs_coord:g}")
  for i, times in enumerate(sketch.times or ()):
    if not np.isfinite(times).all():
      raise ValueError(f"non-finite time: stroke {i} has times {times.tolist()}")
  return sketch
