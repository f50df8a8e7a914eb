"""The drawing page's request checks: every bad request is refused with its status and a
message naming what is wrong."""

import json

import numpy as np
import pytest

from sketchjax.tasks.draw_requests import BadRequest, Limits, parse_request

CLASSES = ("cat", "palm tree")
LIMITS = Limits()


def _body(value) -> bytes:
  return json.dumps(value).encode()


def test_a_good_request_becomes_arrays():
  request = parse_request(_body({"strokes": [[[1, 2], [3.5, 4]], [[0, 0]]], "target": "cat",
                                 "seed": 7}), LIMITS, CLASSES)
  assert len(request.strokes) == 2 and request.target == "cat" and request.seed == 7
  np.testing.assert_array_equal(request.strokes[0], [[1, 2], [3.5, 4]])
  assert request.strokes[1].shape == (1, 2)
  defaults = parse_request(_body({"strokes": [[[1, 2]]]}), LIMITS, CLASSES)
  assert defaults.target is None and defaults.seed == 0


_BAD = [
    (b"{", 400, "malformed JSON"),
    (b"\xff\xfe", 400, "malformed JSON"),
    (b"[1, 2]", 422, "expected a JSON object"),
    (_body({"strokes": [[[1, 2]]], "colour": 1}), 422, r"unknown fields \['colour'\]"),
    (_body({"target": "cat"}), 422, "missing field 'strokes'"),
    (_body({"strokes": "a cat"}), 422, "strokes: expected a list of strokes, got str"),
    (_body({"strokes": []}), 422, "strokes is empty"),
    (_body({"strokes": [[[1, 2]], []]}), 422, r"strokes\[1\] is empty"),
    (_body({"strokes": [{"x": 1}]}), 422, r"strokes\[0\]: expected a list of \[x, y\] points"),
    (_body({"strokes": [[[1, 2], [3]]]}), 422, r"strokes\[0\]\[1\]: expected \[x, y\]"),
    (_body({"strokes": [[[1, "2"]]]}), 422, r"strokes\[0\]\[0\]: expected a number, got str"),
    (_body({"strokes": [[[True, 2]]]}), 422, "expected a number, got bool"),
    (_body({"strokes": [[[None, 2]]]}), 422, "expected a number, got NoneType"),
    (b'{"strokes": [[[NaN, 2]]]}', 422, "NaN is not a number"),
    (b'{"strokes": [[[1, -Infinity]]]}', 422, "-Infinity is not a number"),
    (b'{"strokes": [[[1e400, 2]]]}', 422, "inf is not a finite coordinate"),
    (_body({"strokes": [[[1e7, 2]]]}), 422, "not a finite coordinate within"),
    (_body({"strokes": [[[0, 0]]] * 65}), 413, "65 strokes, at most 64"),
    (_body({"strokes": [[[0, 0]] * 100_000]}), 413, "100000 points, at most 10000"),
    (b" " * 1_000_001, 413, "request body of 1000001 bytes"),
    (_body({"strokes": [[[1, 2]]], "target": 3}), 422, "target: expected a class name"),
    (_body({"strokes": [[[1, 2]]], "target": "unicorn"}), 422, "unknown target 'unicorn'"),
    (_body({"strokes": [[[1, 2]]], "seed": -1}), 422, "seed: expected an integer"),
    (_body({"strokes": [[[1, 2]]], "seed": 1.5}), 422, "seed: expected an integer"),
    (_body({"strokes": [[[1, 2]]], "seed": True}), 422, "seed: expected an integer"),
]


@pytest.mark.parametrize("body, status, message", _BAD,
                         ids=[f"{i}-{status}" for i, (_, status, _) in enumerate(_BAD)])
def test_bad_requests_are_refused_with_a_status_and_a_message(body, status, message):
  with pytest.raises(BadRequest, match=message) as refused:
    parse_request(body, LIMITS, CLASSES)
  assert refused.value.status == status
