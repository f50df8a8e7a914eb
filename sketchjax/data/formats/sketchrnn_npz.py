"""The sketch-rnn `.npz` format: splits of int16 stroke-3 drawings.

Keys are split names (normally `train`/`valid`/`test`); each value is an
object array of `int16[L, 3]` stroke-3 rows `(dx, dy, pen_lifted)` (see
`sketchjax.sketch.sketch`). Files are pickled object arrays, so they are
loaded with `allow_pickle=True, encoding="latin1"` (the official files were
written by Python 2): only open files from a source you trust.
"""

from __future__ import annotations

import os
import pickle
from typing import Iterator, Mapping, Sequence

import numpy as np

from sketchjax.data.formats import atomic_output
from sketchjax.data.records import BadInputPolicy, SketchFormatError, validate_sketch
from sketchjax.sketch.sketch import Sketch, from_stroke3, to_stroke3


def read_sketchrnn_npz(path: str | os.PathLike, *,
                       policy: BadInputPolicy | None = None) -> dict[str, list[Sketch]]:
  """Every split of the file, `{split: [Sketch, ...]}` in file order.

  A bad drawing raises (or, under a "skip" policy, is counted and left out) a
  `SketchFormatError` whose record is `"<split>[i]"`.
  """
  with _load(path) as npz:
    return {split: [sketch for _, sketch in _split_sketches(path, npz, split, policy)]
            for split in npz.files}


def read_sketchrnn_split(path: str | os.PathLike, split: str, *,
                         policy: BadInputPolicy | None = None) -> Iterator[tuple[int, Sketch]]:
  """`(index in the split, Sketch)` for the good drawings of one split."""
  with _load(path) as npz:
    if split not in npz.files:
      raise SketchFormatError(path, None, f"missing split: no {split!r}, the file has {npz.files}")
    yield from _split_sketches(path, npz, split, policy)


def write_sketchrnn_npz(path: str | os.PathLike, splits: Mapping[str, Sequence[Sketch]]) -> None:
  """Writes `{split: sketches}` as object arrays of `int16[L, 3]` stroke-3.

  Raises `SketchFormatError` (record `"<split>[i]"`) for an invalid sketch or
  one whose stroke-3 offsets are not integers within int16.
  """
  arrays = {}
  for split, sketches in splits.items():
    arrays[split] = np.empty(len(sketches), dtype=object)
    for i, sketch in enumerate(sketches):
      try:
        arrays[split][i] = _to_int16_stroke3(sketch)
      except ValueError as e:
        raise SketchFormatError(path, f"{split}[{i}]", str(e)) from None
  with atomic_output(path) as tmp, open(tmp, "wb") as f:
    np.savez(f, **arrays)


def _load(path: str | os.PathLike) -> np.lib.npyio.NpzFile:
  try:
    loaded = np.load(path, allow_pickle=True, encoding="latin1")
  except FileNotFoundError:
    raise
  except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
    raise SketchFormatError(path, None, f"not a sketch-rnn npz: {e}") from None
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    raise SketchFormatError(path, None, "not a sketch-rnn npz: a single array, not splits")
  return loaded


def _split_sketches(path, npz, split: str,
                    policy: BadInputPolicy | None) -> Iterator[tuple[int, Sketch]]:
  policy = policy or BadInputPolicy()
  for i, rows in enumerate(npz[split]):
    try:
      sketch = validate_sketch(_from_stroke3_rows(np.asarray(rows)))
    except ValueError as e:
      policy.handle(SketchFormatError(path, f"{split}[{i}]", str(e)))
      continue
    yield i, sketch


def _from_stroke3_rows(rows: np.ndarray) -> Sketch:
  if rows.ndim != 2 or rows.shape[1] != 3 or rows.dtype.kind not in "iuf":
    raise ValueError(f"bad stroke-3: expected numeric (L, 3) rows, got {rows.dtype} {rows.shape}")
  return from_stroke3(rows)


def _to_int16_stroke3(sketch: Sketch) -> np.ndarray:
  rows = to_stroke3(validate_sketch(sketch))
  if not np.array_equal(rows, np.round(rows)):
    raise ValueError("not integral: stroke-3 offsets must be integers for int16")
  limits = np.iinfo(np.int16)
  if rows.min() < limits.min or rows.max() > limits.max:
    raise ValueError(f"out of int16: offsets span {rows.min():g}..{rows.max():g}")
  return rows.astype(np.int16)
