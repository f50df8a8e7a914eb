"""Readers and writers of the official QuickDraw file formats.

One module per format: `ndjson` (simplified and raw), `sketchrnn_npz`,
`binary` (`full/binary/<category>.bin`), and `folder` (a folder of category
files in any of them). Writers replace the target file only once every record
has been written, so a failed write never leaves a half-written file behind.
"""

import contextlib
import os
import pathlib
from typing import Iterator


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path`, moved onto `path` on success."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
