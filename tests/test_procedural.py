"""The procedural dataset: reproducible, balanced, varied."""

import numpy as np
import pytest

from sketchjax.data import procedural
from sketchjax.sketch.sketch import from_stroke3


def test_records_are_reproducible_and_balanced():
  a, b = procedural.ProceduralSource(24, seed=3), procedural.ProceduralSource(24, seed=3)
  for i in range(24):
    np.testing.assert_array_equal(a[i]["stroke3"], b[i]["stroke3"])
  labels = [int(a[i]["label"]) for i in range(24)]
  assert sorted(set(labels)) == list(range(12)) and labels.count(0) == 2


def test_drawings_vary_and_stay_on_the_canvas():
  source = procedural.ProceduralSource(48, seed=0)
  first = from_stroke3(source[0]["stroke3"])
  again = from_stroke3(source[12]["stroke3"])  # same class, another drawing
  assert not np.allclose(first.points()[:2], again.points()[:2])
  for i in range(48):
    pts = from_stroke3(source[i]["stroke3"]).points()
    assert pts.min() >= -1e-3 and pts.max() <= 255 + 1e-3


def test_bad_arguments():
  with pytest.raises(ValueError):
    procedural.ProceduralSource(10, num_classes=99)
  with pytest.raises(IndexError):
    procedural.ProceduralSource(10)[10]
