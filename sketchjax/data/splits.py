"""The train/test split of official QuickDraw ndjson drawings, by key_id.

The official ndjson files have no split. Ours is decided per category by the
drawings' integer `key_id` alone, so it does not depend on file or line order:

  1. sort the category's drawings by `key_id` (ascending, as integers);
  2. the last `round(n * test_fraction)` of them (the highest key_ids) are
     test, the rest are train.

With `test_fraction = 0.25` and the 20 drawings a category of the project's
real folder (`../shared/data/quickdraw/simplified`, 344 categories), each
category gives 15 train and 5 test drawings: 5,160 / 1,720 in all. This is the
split of `configs/sketchxai_quickdraw.py` and of the ndjson source of
`sketchjax.data.tfds_quickdraw`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sketchjax.data.records import Drawing


def split_by_key_id(
    drawings: Sequence[Drawing], test_fraction: float = 0.25
) -> tuple[list[Drawing], list[Drawing]]:
  """(train, test) of one category's drawings, each sorted by key_id.

  Args:
    drawings: drawings of one category, in any order; key_ids must be unique.
    test_fraction: share of the drawings (by count, rounded half to even)
      that goes to test, in [0, 1].

  Raises:
    ValueError: for a fraction outside [0, 1] or a repeated key_id.
  """
  if not 0.0 <= test_fraction <= 1.0:
    raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
  ordered = sorted(drawings, key=lambda d: int(d.key_id))
  repeated = sorted({int(a.key_id) for a, b in zip(ordered, ordered[1:])
                     if int(a.key_id) == int(b.key_id)})
  if repeated:
    raise ValueError(f"key_ids {repeated[:5]} occur more than once (word "
                     f"{ordered[0].word!r}): the split needs unique key_ids")
  num_train = len(ordered) - round(len(ordered) * test_fraction)
  return ordered[:num_train], ordered[num_train:]
