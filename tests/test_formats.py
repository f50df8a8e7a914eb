"""Readers and writers of the QuickDraw formats, on the real files and on bad input."""

import dataclasses
import functools
import json
import pathlib
import re
import struct

import numpy as np
import pytest

from sketchjax.data.formats.binary import read_binary, timestamp_to_unix, unix_to_timestamp, write_binary
from sketchjax.data.formats.folder import CATEGORY_SUFFIXES, list_category_files, read_drawings
from sketchjax.data.formats.ndjson import read_ndjson, write_ndjson
from sketchjax.data.formats.sketchrnn_npz import (read_sketchrnn_npz, read_sketchrnn_split,
                                                  write_sketchrnn_npz)
from sketchjax.data.records import BadInputPolicy, Drawing, SketchFormatError
from sketchjax.sketch.sketch import Sketch, from_stroke3, to_stroke3

GOOD_LINE = ('{"word":"cat","countrycode":"US","timestamp":"2017-03-02 23:25:10.07453 UTC",'
             '"recognized":true,"key_id":"5159910851477504","drawing":[[[0,10],[0,5]],[[3],[4]]]}')


@functools.cache
def _read_simplified(folder: pathlib.Path) -> dict[str, list[Drawing]]:
  """Every real simplified file, read once per test session."""
  return {name: list(read_ndjson(path)) for name, path in list_category_files(folder).items()}


@pytest.fixture
def simplified(quickdraw_dir) -> dict[str, list[Drawing]]:
  return _read_simplified(quickdraw_dir / "simplified")


@pytest.fixture
def sheep_path(quickdraw_dir) -> pathlib.Path:
  return quickdraw_dir / "sketchrnn_npz" / "aaron_sheep.npz"


def _write_lines(path: pathlib.Path, *lines: str) -> pathlib.Path:
  path.write_text("".join(line + "\n" for line in lines))
  return path


def _truncated_seconds(timestamp: str) -> str:
  return re.sub(r"\.\d+ UTC$", " UTC", timestamp)


# ---------------------------------------------------------------- real files


def test_every_real_simplified_file_reads(simplified):
  assert len(simplified) == 344
  assert list(simplified) == sorted(simplified, key=str.lower)
  for name, drawings in simplified.items():
    assert len(drawings) == 20, name
    for drawing in drawings:
      assert drawing.word == name
      assert drawing.key_id > 0 and len(drawing.countrycode) == 2
      assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ UTC", drawing.timestamp)
      points = drawing.sketch.points()
      assert points.min() >= 0 and points.max() <= 255
  first = simplified["alarm clock"][0]
  assert (first.key_id, first.countrycode, first.recognized) == (5159910851477504, "US", True)
  np.testing.assert_array_equal(first.sketch.strokes[1],
                                [[137, 150], [141, 153], [145, 162], [134, 162], [131, 156], [139, 152]])


def test_write_ndjson_reproduces_the_real_files_byte_for_byte(quickdraw_dir, simplified, tmp_path):
  for name, drawings in simplified.items():
    out = tmp_path / f"{name}.ndjson"
    write_ndjson(out, drawings)
    assert out.read_bytes() == (quickdraw_dir / "simplified" / f"{name}.ndjson").read_bytes(), name


def test_real_drawings_round_trip_through_stroke3(simplified):
  for drawings in simplified.values():
    for drawing in drawings:
      assert from_stroke3(to_stroke3(drawing.sketch)).equals(drawing.sketch)


def test_real_drawings_round_trip_through_binary(simplified, tmp_path):
  for name, drawings in simplified.items():
    path = tmp_path / f"{name}.bin"
    write_binary(path, drawings)
    back = list(read_binary(path, word=name))
    assert len(back) == len(drawings)
    for original, read in zip(drawings, back):
      assert read.sketch.equals(original.sketch), name
      assert dataclasses.replace(read, sketch=original.sketch) == dataclasses.replace(
          original, timestamp=_truncated_seconds(original.timestamp))
    # bin -> ndjson -> bin is exact, timestamps included.
    write_ndjson(tmp_path / "again.ndjson", back)
    write_binary(tmp_path / "again.bin", read_ndjson(tmp_path / "again.ndjson"))
    assert (tmp_path / "again.bin").read_bytes() == path.read_bytes(), name


def test_real_sheep_npz_reads_and_round_trips(sheep_path, tmp_path):
  splits = read_sketchrnn_npz(sheep_path)
  assert {k: len(v) for k, v in splits.items()} == {"train": 7400, "valid": 300, "test": 300}
  original = np.load(sheep_path, allow_pickle=True, encoding="latin1")
  for split, sketches in splits.items():
    for rows, sketch in zip(original[split], sketches):
      np.testing.assert_array_equal(to_stroke3(sketch), rows)
  out = tmp_path / "sheep.npz"
  write_sketchrnn_npz(out, splits)
  written = np.load(out, allow_pickle=True)
  assert sorted(written.files) == sorted(original.files)
  for split in original.files:
    assert written[split].dtype == object and len(written[split]) == len(original[split])
    for a, b in zip(written[split], original[split]):
      assert a.dtype == np.int16
      np.testing.assert_array_equal(a, b)
  back = read_sketchrnn_npz(out)
  for split, sketches in splits.items():
    assert all(a.equals(b) for a, b in zip(sketches, back[split]))


def test_raw_ndjson_with_times_round_trips(simplified, tmp_path):
  """Real simplified strokes with integer times added, as a raw file."""
  drawings = simplified["bicycle"][:5]
  lines, expected = [], []
  for drawing in drawings:
    clock, strokes, times = 0, [], []
    for stroke in drawing.sketch.strokes:
      t = clock + 16 * np.arange(len(stroke))
      clock = int(t[-1]) + 250
      strokes.append([stroke[:, 0].astype(int).tolist(), stroke[:, 1].astype(int).tolist(),
                      t.tolist()])
      times.append(t)
    lines.append(json.dumps({"word": "bicycle", "key_id": str(drawing.key_id), "drawing": strokes}))
    expected.append(Sketch(drawing.sketch.strokes, tuple(times)))
  raw = _write_lines(tmp_path / "raw.ndjson", *lines)
  read = list(read_ndjson(raw))
  assert all(d.sketch.equals(e) for d, e in zip(read, expected))
  assert read[0].sketch.times[1][0] > 0
  write_ndjson(tmp_path / "again.ndjson", read)
  first = json.loads((tmp_path / "again.ndjson").read_text().splitlines()[0])
  assert len(first["drawing"][0]) == 3 and isinstance(first["drawing"][0][2][1], int)
  again = list(read_ndjson(tmp_path / "again.ndjson"))
  assert all(d.sketch.equals(e) for d, e in zip(again, expected))


def test_real_folder_listing_and_dispatch(quickdraw_dir, simplified, sheep_path, tmp_path):
  files = list_category_files(quickdraw_dir / "simplified")
  assert list(files)[:3] == ["aircraft carrier", "airplane", "alarm clock"]
  assert list(files).index("The Eiffel Tower") < list(files).index("tiger")
  assert files["alarm clock"].name == "alarm clock.ndjson"
  from_ndjson = read_drawings(files["cat"])
  assert [d.key_id for d in from_ndjson] == [d.key_id for d in simplified["cat"]]
  write_binary(tmp_path / "cat.bin", simplified["cat"])
  from_bin = read_drawings(tmp_path / "cat.bin")
  assert [d.word for d in from_bin] == ["cat"] * 20
  valid = read_drawings(sheep_path, split="valid")
  assert len(valid) == 300 and valid[7].key_id == 7 and valid[7].word == "aaron_sheep"


# ---------------------------------------------------------- hand-made files


def test_binary_layout_hand_worked(tmp_path):
  drawing = Drawing(Sketch(([[1, 2], [3, 4]], [[255, 0]])), "cat", key_id=2**63 + 5,
                    countrycode="DE", recognized=False, timestamp="2017-03-02 23:25:10.07453 UTC")
  write_binary(tmp_path / "cat.bin", [drawing])
  expected = (struct.pack("<Q", 2**63 + 5) + b"DE" + b"\x00" + struct.pack("<I", 1488497110)
              + struct.pack("<H", 2)
              + struct.pack("<H", 2) + bytes([1, 3]) + bytes([2, 4])
              + struct.pack("<H", 1) + bytes([255]) + bytes([0]))
  assert (tmp_path / "cat.bin").read_bytes() == expected


def test_timestamp_conversions():
  assert timestamp_to_unix("2017-03-02 23:25:10.07453 UTC") == 1488497110
  assert timestamp_to_unix("2017-03-02 23:25:10 UTC") == 1488497110
  assert unix_to_timestamp(1488497110) == "2017-03-02 23:25:10 UTC"
  assert timestamp_to_unix("") == 0 and unix_to_timestamp(0) == ""
  with pytest.raises(ValueError, match="bad timestamp"):
    timestamp_to_unix("March 2nd")


def test_binary_keeps_empty_metadata(tmp_path):
  drawing = Drawing(Sketch(([[1, 2]],)), "dot")
  write_binary(tmp_path / "dot.bin", [drawing])
  (read,) = read_binary(tmp_path / "dot.bin", word="dot")
  assert read.sketch.equals(drawing.sketch) and read.word == "dot"
  assert (read.key_id, read.countrycode, read.recognized, read.timestamp) == (0, "", True, "")


# ----------------------------------------------------------------- bad input


def test_malformed_json_names_file_and_line(tmp_path):
  path = _write_lines(tmp_path / "cat.ndjson", GOOD_LINE, '{"word": "cat", "drawing": [[[1', GOOD_LINE)
  with pytest.raises(SketchFormatError, match="malformed JSON") as info:
    list(read_ndjson(path))
  assert info.value.path == str(path) and info.value.record == 2
  assert str(info.value).startswith(f"{path}:2: malformed JSON")


def test_skip_policy_counts_bad_lines_and_continues(tmp_path):
  path = _write_lines(tmp_path / "cat.ndjson", GOOD_LINE, "not json", "", GOOD_LINE,
                      '{"word": "cat", "drawing": []}', "[1, 2]")
  policy = BadInputPolicy(on_error="skip")
  drawings = list(read_ndjson(path, policy=policy))
  assert len(drawings) == 2
  assert policy.counts == {"malformed JSON": 1, "empty drawing": 1, "not a JSON object": 1}
  assert "skipped 3" in policy.summary()


def _bad_line(drawing_json: str) -> str:
  return '{"word": "cat", "key_id": "1", "drawing": ' + drawing_json + "}"


@pytest.mark.parametrize("line, reason", [
    ('{"word": "cat"}', "missing field: no 'drawing'"),
    (_bad_line("[]"), "empty drawing"),
    (_bad_line("[[[1, 2], [3, 4]], [[], []]]"), "empty stroke: stroke 1"),
    (_bad_line("[[[1, NaN], [3, 4]]]"), "non-finite coordinate: stroke 0 point 1"),
    (_bad_line("[[[1, Infinity], [3, 4]]]"), "non-finite coordinate"),
    (_bad_line("[[[1, 1e12], [3, 4]]]"), "absurd coordinate"),
    (_bad_line("[[[1, 2, 3], [3, 4]]]"), "ragged stroke: stroke 0"),
    (_bad_line('[[[1, "a"], [3, 4]]]'), "non-number: stroke 0"),
    (_bad_line("[[[1, null], [3, 4]]]"), "non-number"),
    (_bad_line("[[[1, 2]]]"), "bad stroke: stroke 0"),
    (_bad_line("[[[1], [2], [0]], [[1], [2]]]"), "mixed strokes"),
    (_bad_line("7"), "bad drawing"),
    ('{"key_id": "x1", "drawing": [[[1], [2]]]}', "bad key_id"),
])
def test_bad_ndjson_line_names_reason_and_line(tmp_path, line, reason):
  path = _write_lines(tmp_path / "cat.ndjson", GOOD_LINE, GOOD_LINE, line)
  with pytest.raises(SketchFormatError, match=re.escape(f"cat.ndjson:3: {reason}")):
    list(read_ndjson(path))


def test_one_point_strokes_are_kept(tmp_path):
  path = _write_lines(tmp_path / "cat.ndjson", GOOD_LINE)
  (drawing,) = read_ndjson(path)
  np.testing.assert_array_equal(drawing.sketch.strokes[1], [[3, 4]])


def _real_like_bin(path: pathlib.Path, n: int = 3) -> pathlib.Path:
  drawings = [Drawing(Sketch(([[i, 2], [3, 4], [5, 6]],)), "cat", key_id=i + 1) for i in range(n)]
  write_binary(path, drawings)
  return path


def test_truncated_binary_names_drawing_and_offset(tmp_path):
  path = _real_like_bin(tmp_path / "cat.bin")
  data = path.read_bytes()
  record_size = len(data) // 3
  path.write_bytes(data[:-3])
  with pytest.raises(SketchFormatError, match="truncated record") as info:
    list(read_binary(path))
  assert info.value.record == 2
  assert f"byte offset {2 * record_size + 17 + 2}" in str(info.value)
  policy = BadInputPolicy(on_error="skip")
  assert [d.key_id for d in read_binary(path, policy=policy)] == [1, 2]
  assert policy.counts == {"truncated record": 1}
  path.write_bytes(data[:record_size + 5])  # cut inside the header
  with pytest.raises(SketchFormatError, match=f"cat.bin:1: truncated record: needs 17 bytes at "
                                              f"byte offset {record_size}"):
    list(read_binary(path))


def test_binary_zero_point_stroke_is_skipped_alone(tmp_path):
  path = _real_like_bin(tmp_path / "cat.bin", n=2)
  bad = struct.pack("<Q2sbIH", 9, b"US", 1, 0, 1) + struct.pack("<H", 0)
  path.write_bytes(bad + path.read_bytes())
  with pytest.raises(SketchFormatError, match="cat.bin:0: empty stroke"):
    list(read_binary(path))
  policy = BadInputPolicy(on_error="skip")
  assert [d.key_id for d in read_binary(path, policy=policy)] == [1, 2]


@pytest.mark.parametrize("sketch, fields, reason", [
    (Sketch(([[0, 0], [256, 1]],)), {}, "coordinate out of uint8: stroke 0"),
    (Sketch(([[0, 0]], [[-1, 1]])), {}, "coordinate out of uint8: stroke 1"),
    (Sketch(([[0, 0.5]],)), {}, "coordinate out of uint8"),
    (Sketch(([[0, 0]],), times=([0],)), {}, "raw drawing"),
    (Sketch(([[0, 0]],)), {"countrycode": "USA"}, "bad countrycode"),
    (Sketch(([[0, 0]],)), {"key_id": -1}, "bad key_id"),
    (Sketch(([[0, 0]],)), {"timestamp": "yesterday"}, "bad timestamp"),
    (Sketch(()), {}, "empty drawing"),
])
def test_write_binary_rejects_what_the_format_cannot_hold(tmp_path, sketch, fields, reason):
  drawings = [Drawing(Sketch(([[1, 1]],)), "cat"), Drawing(sketch, "cat", **fields)]
  with pytest.raises(SketchFormatError, match=re.escape(f"cat.bin:1: {reason}")):
    write_binary(tmp_path / "cat.bin", drawings)
  assert not (tmp_path / "cat.bin").exists()  # no half-written file
  assert not list(tmp_path.iterdir())


def test_npz_bad_record_names_split_and_index(tmp_path):
  train = np.empty(3, dtype=object)
  train[0] = np.array([[1, 2, 1]], np.int16)
  train[1] = np.array([[1, 2]], np.int16)
  train[2] = np.zeros((0, 3), np.int16)
  np.savez(tmp_path / "cat.npz", train=train)
  with pytest.raises(SketchFormatError, match=re.escape("cat.npz:train[1]: bad stroke-3")):
    read_sketchrnn_npz(tmp_path / "cat.npz")
  policy = BadInputPolicy(on_error="skip")
  assert [i for i, _ in read_sketchrnn_split(tmp_path / "cat.npz", "train", policy=policy)] == [0]
  assert policy.counts == {"bad stroke-3": 1, "empty drawing": 1}
  with pytest.raises(SketchFormatError, match="missing split: no 'valid'"):
    read_drawings(tmp_path / "cat.npz", split="valid")


def test_npz_nan_is_rejected(tmp_path):
  train = np.empty(1, dtype=object)
  train[0] = np.array([[1, np.nan, 1]])
  np.savez(tmp_path / "cat.npz", train=train)
  with pytest.raises(SketchFormatError, match=re.escape("train[0]: non-finite coordinate")):
    read_sketchrnn_npz(tmp_path / "cat.npz")


def test_write_npz_rejects_non_integral_and_out_of_int16(tmp_path):
  fine = Sketch(([[1, 2]],))
  with pytest.raises(SketchFormatError, match=re.escape("x.npz:train[1]: not integral")):
    write_sketchrnn_npz(tmp_path / "x.npz", {"train": [fine, Sketch(([[0.5, 2]],))]})
  with pytest.raises(SketchFormatError, match=re.escape("x.npz:test[0]: out of int16")):
    write_sketchrnn_npz(tmp_path / "x.npz", {"train": [fine], "test": [Sketch(([[0, 0], [40000, 0]],))]})
  assert not list(tmp_path.iterdir())


def test_write_npz_keeps_equal_length_drawings_as_object_arrays(tmp_path):
  sketches = [Sketch(([[1, 2], [3, 4]],)), Sketch(([[5, 6], [7, 8]],))]
  write_sketchrnn_npz(tmp_path / "x.npz", {"train": sketches})
  stored = np.load(tmp_path / "x.npz", allow_pickle=True)["train"]
  assert stored.shape == (2,) and stored.dtype == object
  assert all(a.equals(b) for a, b in zip(read_sketchrnn_npz(tmp_path / "x.npz")["train"], sketches))


def test_write_ndjson_rejects_invalid_sketch(tmp_path):
  with pytest.raises(SketchFormatError, match=re.escape("cat.ndjson:0: non-finite coordinate")):
    write_ndjson(tmp_path / "cat.ndjson", [Drawing(Sketch(([[np.nan, 1]],)), "cat")])


def test_unknown_suffix(tmp_path):
  (tmp_path / "cat.svg").write_text("<svg/>")
  with pytest.raises(SketchFormatError, match=r"cat.svg: unknown format '.svg'; expected one of "
                                              r"\.ndjson, \.npz, \.bin"):
    read_drawings(tmp_path / "cat.svg")


def test_missing_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="no sketch folder at .*nowhere"):
    list_category_files(tmp_path / "nowhere")


def test_folder_without_category_files(tmp_path):
  (tmp_path / "notes.txt").write_text("hi")
  with pytest.raises(ValueError, match="no category files"):
    list_category_files(tmp_path)


def test_folder_ignores_other_formats_and_sorts_case_insensitively(tmp_path):
  for name in ("zebra.ndjson", "The Mona Lisa.bin", "apple.npz", "readme.md", "bee.svg"):
    (tmp_path / name).write_text("")
  assert list(list_category_files(tmp_path)) == ["apple", "The Mona Lisa", "zebra"]
  assert CATEGORY_SUFFIXES == (".ndjson", ".npz", ".bin")


def test_folder_rejects_a_category_in_two_formats(tmp_path):
  (tmp_path / "cat.ndjson").write_text("")
  (tmp_path / "cat.bin").write_text("")
  with pytest.raises(ValueError, match="category 'cat' has two files"):
    list_category_files(tmp_path)
