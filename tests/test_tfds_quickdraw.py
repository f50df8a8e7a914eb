"""QuickdrawStrokes: built from the real files, read back by random access, no TensorFlow."""

import functools
import http.server
import shutil
import sys
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sketchjax.data import categories as categories_lib
from sketchjax.data import tfds_quickdraw
from sketchjax.data.formats.ndjson import read_ndjson
from sketchjax.data.splits import split_by_key_id
from sketchjax.sketch.sketch import from_stroke3, to_stroke3

SUBSET = ["zebra", "alarm clock", "The Eiffel Tower", "cat", "t-shirt"]


@pytest.fixture(autouse=True)
def _quiet_progress_bars():
  tfds.disable_progress_bar()


def _assert_no_tensorflow():
  loaded = [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]
  assert not loaded, loaded


def _expected_ndjson(folder, names):
  """{split: {(category, key_id): Drawing}} from the files, via splits.py."""
  expected = {"train": {}, "test": {}}
  for name in names:
    train, test = split_by_key_id(list(read_ndjson(folder / f"{name}.ndjson")))
    for split, drawings in (("train", train), ("test", test)):
      expected[split].update({(name, d.key_id): d for d in drawings})
  return expected


def _assert_records_equal_drawings(source, expected, class_names):
  assert len(source) == len(expected)
  seen = set()
  for record in (source[i] for i in range(len(source))):
    category = class_names[record["label"]]
    drawing = expected[(category, int(record["key_id"]))]
    assert record["stroke3"].dtype == np.int32
    np.testing.assert_array_equal(record["stroke3"], to_stroke3(drawing.sketch))
    assert from_stroke3(record["stroke3"]).equals(drawing.sketch)
    assert record["word"].decode() == drawing.word == category
    seen.add((category, int(record["key_id"])))
  assert seen == set(expected)


def test_ndjson_subset_round_trip(quickdraw_dir, tmp_path):
  folder = quickdraw_dir / "simplified"
  builder = tfds_quickdraw.build(tmp_path / "data", folder, SUBSET)
  _assert_no_tensorflow()
  class_names = builder.info.features["label"].names
  assert class_names == ["alarm clock", "cat", "t-shirt", "The Eiffel Tower", "zebra"]
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == \
         {"train": 75, "test": 25}

  expected = _expected_ndjson(folder, SUBSET)
  for split in ("train", "test"):
    _assert_records_equal_drawings(tfds_quickdraw.load_split(builder, split),
                                   expected[split], class_names)
  # The same data through the public TFDS entry point and from the folder alone.
  name = f"quickdraw_strokes/{builder.builder_config.name}"
  source = tfds.data_source(name, data_dir=tmp_path / "data", split="test")
  _assert_records_equal_drawings(source, expected["test"], class_names)
  from_folder = tfds_quickdraw.load_split(builder.data_dir, "train[:10]")
  assert len(from_folder) == 10
  _assert_no_tensorflow()


def test_max_per_category_keeps_lowest_key_ids(quickdraw_dir, tmp_path):
  folder = quickdraw_dir / "simplified"
  builder = tfds_quickdraw.build(tmp_path / "data", folder, ["cat", "zebra"], max_per_category=8)
  lowest = {}
  for name in ("cat", "zebra"):
    drawings = sorted(read_ndjson(folder / f"{name}.ndjson"), key=lambda d: d.key_id)[:8]
    lowest[name] = [d.key_id for d in drawings]
  class_names = builder.info.features["label"].names
  for split, part in (("train", slice(0, 6)), ("test", slice(6, 8))):
    source = tfds_quickdraw.load_split(builder, split)
    got = {name: sorted(int(r["key_id"]) for r in (source[i] for i in range(len(source)))
                        if class_names[r["label"]] == name) for name in lowest}
    assert got == {name: ids[part] for name, ids in lowest.items()}


def test_sketchrnn_npz_sheep(quickdraw_dir, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "sheep.npz").symlink_to(quickdraw_dir / "sketchrnn_npz" / "aaron_sheep.npz")
  builder = tfds_quickdraw.build(tmp_path / "data", manual, ["sheep"], "sketchrnn_npz")
  sizes = {s: builder.info.splits[s].num_examples for s in builder.info.splits}
  assert sizes == {"train": 7400, "validation": 300, "test": 300}

  raw = np.load(manual / "sheep.npz", allow_pickle=True, encoding="latin1")
  for split, key in (("validation", "valid"), ("test", "test")):
    source = tfds_quickdraw.load_split(builder, split)
    records = sorted((source[i] for i in range(len(source))), key=lambda r: r["key_id"])
    assert [int(r["key_id"]) for r in records] == list(range(len(raw[key])))
    for record, rows in zip(records, raw[key]):
      np.testing.assert_array_equal(record["stroke3"], rows)
      assert record["label"] == 0 and record["word"] == b"sheep"
  _assert_no_tensorflow()


class _FolderHandler(http.server.SimpleHTTPRequestHandler):
  """Serves a folder and records the request paths; silent."""

  def __init__(self, *args, requested, **kwargs):
    self.requested = requested
    super().__init__(*args, **kwargs)

  def do_GET(self):
    self.requested.append(self.path)
    super().do_GET()

  timeout = 10  # seconds a connection may stall

  def log_message(self, *args):
    pass


def test_download_from_local_http_server(quickdraw_dir, tmp_path):
  served, manual = tmp_path / "served", tmp_path / "manual"
  served.mkdir()
  manual.mkdir()
  for name in ("alarm clock", "cat"):
    shutil.copy(quickdraw_dir / "simplified" / f"{name}.ndjson", served)
  shutil.copy(quickdraw_dir / "simplified" / "cat.ndjson", manual)  # no need to fetch cat
  requested = []
  handler = functools.partial(_FolderHandler, requested=requested, directory=str(served))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    builder = tfds_quickdraw.build(tmp_path / "data", manual, ["alarm clock", "cat"],
                                   download=True, base_url=base_url)
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
  assert requested == ["/alarm%20clock.ndjson"]
  expected = _expected_ndjson(served, ["alarm clock", "cat"])
  _assert_records_equal_drawings(tfds_quickdraw.load_split(builder, "test"), expected["test"],
                                 builder.info.features["label"].names)
  _assert_no_tensorflow()


def test_missing_files_say_how_to_get_them(quickdraw_dir, tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    tfds_quickdraw.build(tmp_path / "data", quickdraw_dir / "simplified", "all")
  message = str(error.value)
  assert "missing for 1 of 345 categories: 'zigzag.ndjson'" in message
  assert str(quickdraw_dir / "simplified") in message
  assert f"{tfds_quickdraw.NDJSON_BASE_URL}zigzag.ndjson" in message
  assert "download=True" in message

  with pytest.raises(FileNotFoundError) as error:
    tfds_quickdraw.build(tmp_path / "data", None, ["alarm clock"], "sketchrnn_npz")
  message = str(error.value)
  assert str(tmp_path / "data" / "downloads" / "manual") in message
  assert "https://storage.googleapis.com/quickdraw_dataset/sketchrnn/alarm%20clock.npz" in message


def test_config_names_are_stable_and_predefined_configs_reused():
  config = tfds_quickdraw.quickdraw_config("cat,zebra,alarm clock", max_per_category=100)
  same = tfds_quickdraw.quickdraw_config(["zebra", "alarm clock", "cat"], max_per_category=100)
  assert config.name == same.name
  assert config.name.startswith("3cats-") and config.name.endswith("-ndjson-max100-test0.25")
  assert config.categories == ("alarm clock", "cat", "zebra")
  assert tfds_quickdraw.quickdraw_config("all") is \
         tfds_quickdraw.QuickdrawStrokes.builder_configs["qd345-ndjson-test0.25"]
  assert tfds_quickdraw.quickdraw_config("sketchxai30", "sketchrnn_npz").name == \
         "sketchxai30-sketchrnn_npz"
  with pytest.raises(ValueError, match="source"):
    tfds_quickdraw.quickdraw_config("cat", "svg")


def test_category_url_quotes_spaces():
  assert tfds_quickdraw.category_url("The Eiffel Tower", "ndjson") == (
      tfds_quickdraw.NDJSON_BASE_URL + "The%20Eiffel%20Tower.ndjson")
  assert tfds_quickdraw.NDJSON_BASE_URL == (
      "https://storage.googleapis.com/quickdraw_dataset/full/simplified/")
  assert tfds_quickdraw.category_url("cat", "sketchrnn_npz", "http://127.0.0.1:8/x") == \
         "http://127.0.0.1:8/x/cat.npz"


def test_categories_match_official_files(quickdraw_dir, pretrained_dir):
  doodlenet = (pretrained_dir / "doodlenet" / "class_names.txt").read_text().split()
  official = [name.replace("_", " ") for name in doodlenet]
  assert len(official) == 345
  assert categories_lib.QUICKDRAW_345 == categories_lib.sort_categories(official)
  stems = {p.stem for p in (quickdraw_dir / "simplified").glob("*.ndjson")}
  assert set(categories_lib.QUICKDRAW_345) - stems == {"zigzag"}


def test_resolve_categories():
  resolve = categories_lib.resolve_categories
  assert resolve("all") == resolve("345") == categories_lib.QUICKDRAW_345
  assert resolve("sketchxai30") == categories_lib.SKETCHXAI_30
  assert len(categories_lib.SKETCHXAI_30) == 30
  assert categories_lib.SKETCHXAI_30[:3] == ("airplane", "apple", "baseball bat")
  assert resolve("cat, alarm clock") == ("cat", "alarm clock")
  assert resolve(["zebra", "cat"]) == ("zebra", "cat")
  with pytest.raises(ValueError, match=r"\['kitten', 'alarm_clock'\]"):
    resolve(["cat", "kitten", "alarm_clock"])
  with pytest.raises(ValueError, match="no category"):
    resolve(" , ")
