"""grain input pipelines: stroke records to host-local tokenised batches.

A source is any random-access sequence of records `{"stroke3": [L, 3],
"label": int}` (a `tfds.data_source`, the procedural source, or a list read
from a folder). Per record: stroke-3 to `Sketch`, SketchXAI normalisation
(spec A.1), optional augmentation; per batch: tokenisation to fixed shapes
(`tokenize.py`). Every process reads only its interleaved share of each global
batch; shuffling is seeded, so all processes agree on the global order and a
restored iterator continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import grain
import jax
import numpy as np

from sketchjax.data import tokenize
from sketchjax.sketch import augment, normalize
from sketchjax.sketch.sketch import Sketch, from_stroke3

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Example:
  """A decoded record: a normalised sketch, its label and its weight."""

  sketch: Sketch
  label: int
  weight: float


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Training-time augmentation (off by default: the official code has none)."""

  affine: bool = False
  stroke_dropout: float = 0.0

  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    sketch = example.sketch
    if self.affine:
      sketch = augment.random_affine(sketch, rng)
    if self.stroke_dropout > 0:
      sketch = augment.stroke_dropout(sketch, rng, self.stroke_dropout)
    return dataclasses.replace(example, sketch=sketch)


_DOT = Sketch((np.zeros((1, 2)),))


def decode(record: Record, weight: float = 1.0) -> Example:
  """Stroke-3 record to a normalised example.

  A degenerate sketch (all points within the normalisation's epsilon, which
  the official converter drops) becomes a single dot of weight 0, so batches
  keep their shape and it counts for nothing.
  """
  sketch = from_stroke3(np.asarray(record["stroke3"]))
  try:
    sketch = normalize.normalize_sketchxai(sketch)
  except normalize.DegenerateSketchError:
    sketch, weight = _DOT, 0.0
  return Example(sketch, int(record["label"]), weight)


def _tokenize(examples: Sequence[Example], config: tokenize.TokenizerConfig,
              stats: tokenize.TokenizeStats) -> dict[str, np.ndarray]:
  return tokenize.tokenize_batch([e.sketch for e in examples],
                                 [e.label for e in examples], config,
                                 weights=[e.weight for e in examples], stats=stats)


def process_batch_size(global_batch_size: int) -> int:
  """This process's share of a global batch (ValueError if it does not split)."""
  processes = jax.process_count()
  if global_batch_size % processes:
    raise ValueError(f"global batch {global_batch_size} does not split over "
                     f"{processes} processes")
  return global_batch_size // processes


def train_iterator(source: Sequence[Record], *, global_batch_size: int, seed: int,
                   tokenizer: tokenize.TokenizerConfig,
                   augmentation: Augmentation = Augmentation(),
                   stats: tokenize.TokenizeStats | None = None) -> grain.DatasetIterator:
  """Endless shuffled batches of this process's share; checkpointable."""
  if len(source) == 0:
    raise ValueError("the training source is empty")
  stats = stats if stats is not None else tokenize.TokenizeStats()
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  ds = ds[jax.process_index()::jax.process_count()].map(decode)
  if augmentation != Augmentation():
    ds = ds.random_map(augmentation)
  batch_fn = functools.partial(_tokenize, config=tokenizer, stats=stats)
  return iter(ds.to_iter_dataset().batch(process_batch_size(global_batch_size),
                                         drop_remainder=True, batch_fn=batch_fn))


def eval_batches(source: Sequence[Record], *, global_batch_size: int,
                 tokenizer: tokenize.TokenizerConfig,
                 stats: tokenize.TokenizeStats | None = None):
  """One pass over the source in order, the last batch padded with weight 0.

  Every process gets the same number of batches (the source is padded to a
  whole number of global batches), as collective evaluation needs.
  """
  stats = stats if stats is not None else tokenize.TokenizeStats()
  size = len(source)
  if size == 0:
    raise ValueError("the evaluation source is empty")
  padded = math.ceil(size / global_batch_size) * global_batch_size

  def read(index: int) -> Example:
    example = decode(source[min(index, size - 1)])
    return example if index < size else dataclasses.replace(example, weight=0.0)

  ds = grain.MapDataset.range(padded)[jax.process_index()::jax.process_count()]
  ds = ds.map(read)
  batch_fn = functools.partial(_tokenize, config=tokenizer, stats=stats)
  return ds.to_iter_dataset().batch(process_batch_size(global_batch_size),
                                    drop_remainder=True, batch_fn=batch_fn)
