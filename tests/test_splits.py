"""The key_id train/test split of QuickDraw ndjson drawings."""

import random

import numpy as np
import pytest

from sketchjax.data.formats.ndjson import read_ndjson
from sketchjax.data.records import Drawing
from sketchjax.data.splits import split_by_key_id
from sketchjax.sketch.sketch import Sketch


def _drawings(key_ids):
  dot = Sketch((np.zeros((1, 2)),))
  return [Drawing(sketch=dot, word="cat", key_id=k) for k in key_ids]


def test_last_quarter_of_key_ids_is_test():
  key_ids = [7 * k + 10**15 for k in range(20)]
  random.Random(0).shuffle(key_ids)
  train, test = split_by_key_id(_drawings(key_ids))
  assert [d.key_id for d in train] == sorted(key_ids)[:15]
  assert [d.key_id for d in test] == sorted(key_ids)[15:]


def test_split_ignores_input_order():
  key_ids = list(range(100, 137))
  first = split_by_key_id(_drawings(key_ids), 0.3)
  random.Random(1).shuffle(key_ids)
  second = split_by_key_id(_drawings(key_ids), 0.3)
  assert [[d.key_id for d in part] for part in first] == \
         [[d.key_id for d in part] for part in second]
  assert len(first[1]) == round(37 * 0.3)


@pytest.mark.parametrize("fraction, expected", [(0.0, (4, 0)), (1.0, (0, 4)), (0.25, (3, 1))])
def test_fraction_edges(fraction, expected):
  train, test = split_by_key_id(_drawings([4, 3, 2, 1]), fraction)
  assert (len(train), len(test)) == expected
  assert split_by_key_id([], fraction) == ([], [])


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="test_fraction"):
    split_by_key_id(_drawings([1, 2]), 1.5)
  with pytest.raises(ValueError, match=r"key_ids \[2\] occur more than once.*'cat'"):
    split_by_key_id(_drawings([1, 2, 2, 3]))


def test_real_folder_gives_15_train_5_test_per_category(quickdraw_dir):
  files = sorted((quickdraw_dir / "simplified").glob("*.ndjson"))
  assert len(files) == 344
  num_train = num_test = 0
  for path in files:
    train, test = split_by_key_id(list(read_ndjson(path)))
    assert (len(train), len(test)) == (15, 5), path
    assert max(d.key_id for d in train) < min(d.key_id for d in test)
    num_train, num_test = num_train + len(train), num_test + len(test)
  assert (num_train, num_test) == (5160, 1720)
