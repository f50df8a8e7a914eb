"""Sketch validation, SketchFormatError and the bad-input policy."""

import numpy as np
import pytest

from sketchjax.data.records import BadInputPolicy, SketchFormatError, validate_sketch
from sketchjax.sketch.sketch import Sketch


def test_valid_sketch_with_a_dot_passes_unchanged():
  sketch = Sketch(([[0, 0], [5, 5]], [[3, 3]]))
  assert validate_sketch(sketch) is sketch


@pytest.mark.parametrize("sketch, reason", [
    (Sketch(()), "empty drawing"),
    (Sketch(([[0, 0]], np.zeros((0, 2)))), "empty stroke: stroke 1"),
    (Sketch(([[0, 0], [np.nan, 1]],)), "non-finite coordinate: stroke 0 point 1"),
    (Sketch(([[0, 0]], [[np.inf, 1]])), "non-finite coordinate: stroke 1 point 0"),
    (Sketch(([[0, 0], [1, -2e5]],)), "absurd coordinate: stroke 0 point 1"),
    (Sketch(([[0, 0]],), times=([np.nan],)), "non-finite time"),
])
def test_validate_rejects(sketch, reason):
  with pytest.raises(ValueError, match=reason):
    validate_sketch(sketch)


def test_validate_absurd_threshold_is_configurable():
  sketch = Sketch(([[0, 0], [1, 500]],))
  validate_sketch(sketch)
  with pytest.raises(ValueError, match="absurd"):
    validate_sketch(sketch, max_abs_coord=255)


def test_format_error_message_and_kind():
  error = SketchFormatError("/x/cat.ndjson", 7, "malformed JSON: Expecting value")
  assert str(error) == "/x/cat.ndjson:7: malformed JSON: Expecting value"
  assert (error.path, error.record, error.kind) == ("/x/cat.ndjson", 7, "malformed JSON")
  assert str(SketchFormatError("a.npz", "train[3]", "r")) == "a.npz:train[3]: r"
  assert str(SketchFormatError("a.svg", None, "unknown format")) == "a.svg: unknown format"
  assert isinstance(error, ValueError)


def test_policy_raises_by_default():
  with pytest.raises(SketchFormatError):
    BadInputPolicy().handle(SketchFormatError("f", 1, "empty drawing: no strokes"))


def test_skip_policy_counts_per_kind_and_summarises():
  policy = BadInputPolicy(on_error="skip")
  assert policy.summary() == "no bad records skipped"
  policy.handle(SketchFormatError("f", 1, "malformed JSON: a"))
  policy.handle(SketchFormatError("f", 2, "malformed JSON: b"))
  policy.handle(SketchFormatError("f", 3, "empty drawing: no strokes"))
  assert policy.counts == {"malformed JSON": 2, "empty drawing": 1}
  assert policy.summary() == "skipped 3 bad record(s) (empty drawing: 1, malformed JSON: 2)"


def test_policy_rejects_unknown_mode():
  with pytest.raises(ValueError, match="on_error"):
    BadInputPolicy(on_error="ignore")
