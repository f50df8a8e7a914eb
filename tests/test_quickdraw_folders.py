"""Several QuickDraw folders read as one: duplicates dropped and counted, categories
chosen by a minimum count (the qd16/qd25 benchmark on the real files), sketch-rnn
files holding only a test split, and evaluation that skips unknown classes."""

import dataclasses
import importlib.util
import json
import pathlib

import pytest

from sketchjax.data import quickdraw_folders, quickdraw_sources, tfds_quickdraw
from sketchjax.tasks import classify_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _line(word: str, key_id: int, drawing) -> str:
  return json.dumps({"word": word, "countrycode": "US", "timestamp": "2017-03-01 00:00:00",
                     "recognized": True, "key_id": f"{key_id:016d}", "drawing": drawing})


def _stroke(i: int):
  return [[[0, 10 + i, 20], [0, 5, 9 + i]]]


def test_duplicates_across_folders_are_dropped_and_counted(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  a.mkdir(), b.mkdir()
  (a / "cat.ndjson").write_text("\n".join(_line("cat", k, _stroke(k)) for k in range(5)) + "\n")
  (b / "cat.ndjson").write_text("\n".join([
      _line("cat", 3, _stroke(3)),  # the same drawing
      _line("cat", 4, _stroke(99)),  # the same key_id, other strokes
      _line("cat", 77, _stroke(1)),  # a synthetic key_id, strokes of key_id 1
      _line("cat", 5, _stroke(5)), _line("cat", 6, _stroke(6))]) + "\n")
  (b / "dog.ndjson").write_text(_line("dog", 9, _stroke(0)) + "\n")
  merged = quickdraw_folders.merge_folders([str(a), str(b)], min_drawings=2)
  assert merged.read == {str(a): {"cat": 5}, str(b): {"cat": 5, "dog": 1}}
  assert merged.kept == {"cat": 7, "dog": 1}
  assert merged.same_key_id == {"cat": 2, "dog": 0}
  assert merged.same_strokes == {"cat": 1, "dog": 0}
  assert merged.categories == ("cat",)  # dog has 1 < 2
  assert "duplicates dropped: 2 with a key_id seen before, 1 with the strokes" in \
      merged.summary(0.25)
  assert "cat: 5 / 2" in merged.summary(0.25)

  manual = quickdraw_folders.write_merged(merged, tmp_path / "tfds")
  assert sorted(p.name for p in manual.iterdir()) == ["cat.ndjson"]
  builder = tfds_quickdraw.build(manual.parent, manual, ["cat"], test_fraction=0.25)
  train, test = (tfds_quickdraw.load_split(builder, s) for s in ("train", "test"))
  assert sorted(int(train[i]["key_id"]) for i in range(len(train))) == [0, 1, 2, 3, 4]
  assert sorted(int(test[i]["key_id"]) for i in range(len(test))) == [5, 6]


def test_a_bad_line_names_its_file_and_line(tmp_path):
  (tmp_path / "cat.ndjson").write_text(_line("cat", 1, _stroke(1)) + "\n{broken\n")
  with pytest.raises(ValueError, match=r"cat.ndjson.*2"):
    quickdraw_folders.merge_folders([str(tmp_path)])


@pytest.fixture(scope="module")
def real_merge():
  shared = REPO.parent / "shared" / "data" / "quickdraw"
  if not (shared / "extra" / "simplified").is_dir():
    pytest.skip(f"real data not found at {shared}/extra: these tests need the project's "
                "../shared folder next to the checkout")
  return quickdraw_folders.merge_folders(
      quickdraw_folders.parse_dirs(classify_config.QD_FOLDERS))


QD16 = ("bird,cake,cat,circle,dog,duck,eye,flamingo,horse,mouth,necklace,piano,"
        "power outlet,smiley face,snowman,teapot").split(",")
QD25_MORE = "ant,butterfly,monkey,mosquito,owl,scorpion,square,squiggle,triangle".split(",")


def test_qd16_and_qd25_on_the_real_folders(real_merge):
  kept = real_merge.kept
  assert sorted(c for c in kept if kept[c] >= 1000) == QD16
  assert sorted(c for c in kept if kept[c] >= 400) == sorted(QD16 + QD25_MORE)
  assert sum(real_merge.read[d][c] for d in real_merge.read for c in real_merge.read[d]) == \
      6880 + 49403
  assert kept["eye"] == 4935 and kept["triangle"] == 425  # 20 official + the extra ones
  qd16 = dataclasses.replace(real_merge, categories=tuple(QD16))
  splits = qd16.split_counts(0.1)
  assert sum(t for t, _ in splits.values()) == 30764
  assert sum(s for _, s in splits.values()) == 3419


def _config(module_name: str, arg: str):
  spec = importlib.util.spec_from_file_location("cfg", REPO / "configs" / module_name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("config_file", ["sketchxai_quickdraw.py", "raster_quickdraw.py"])
def test_benchmark_configs(config_file):
  for name, count in (("qd16", 1000), ("qd25", 400)):
    config = _config(config_file, f"{name},smoke")
    assert config.data.min_drawings == count and config.data.test_fraction == 0.1
    assert config.data.dir.split(",") == [
        str(REPO.parent / "shared/data/quickdraw/simplified"),
        str(REPO.parent / "shared/data/quickdraw/extra/simplified")]


def test_two_folders_train_end_to_end(tmp_path, quickdraw_dir, caplog):
  from sketchjax.tasks import classify  # pylint: disable=import-outside-toplevel
  config = _config("sketchxai_quickdraw.py", "qd16,smoke")
  config.data.categories = "apple,banana,bear"  # 110 / 110 / 260 drawings: fast
  config.data.min_drawings = 200
  config.train.num_steps = 2
  workdir = tmp_path / "run"
  with caplog.at_level("INFO"):
    classify.run(config, str(workdir))
  assert json.loads((workdir / "classes.json").read_text()) == ["bear"]
  assert "1 categories selected; train / test (test fraction 0.1)" in caplog.text
  assert "bear: 234 / 26" in caplog.text
  assert "duplicates dropped: 0 with a key_id seen before" in caplog.text


def test_test_only_sketchrnn_files(tmp_path, quickdraw_dir):
  folder = tmp_path / "npz"
  folder.mkdir()
  (folder / "pig.npz").symlink_to(quickdraw_dir / "extra" / "sketchrnn_npz" / "pig.npz")
  builder = tfds_quickdraw.build(tmp_path / "tfds", folder, ["pig"], "sketchrnn_npz")
  assert len(tfds_quickdraw.load_split(builder, "test")) == 2500
  assert len(tfds_quickdraw.load_split(builder, "train")) == 0  # not an error here...
  config = classify_config.base_config()
  config.data.update(source="quickdraw", format="sketchrnn_npz", categories="folder",
                     dir=str(folder), tfds_dir=str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match="no training drawings .* only a test split"):
    quickdraw_sources.train_test_sources(config, tmp_path)  # ...but training needs it


def test_evaluate_skips_unknown_classes_when_asked(tmp_path, quickdraw_dir):
  config = classify_config.base_config()
  eval_dir = tmp_path / "eval"
  eval_dir.mkdir()
  for name in ("pig", "face"):  # sketch-rnn files with only a test split
    (eval_dir / f"{name}.npz").symlink_to(
        quickdraw_dir / "extra" / "sketchrnn_npz" / f"{name}.npz")
  config.data.eval_dir = str(eval_dir)
  with pytest.raises(ValueError, match=r"not trained on: \['face'\].*unknown_classes=skip"):
    quickdraw_sources.folder_source(config, ["cat", "pig"])
  config.data.unknown_classes = "skip"
  source, skipped = quickdraw_sources.folder_source(config, ["cat", "pig"])
  assert skipped == ["face"] and len(source) == 2500
  assert {r["label"] for r in source} == {1}
  with pytest.raises(ValueError, match="no file of a class the model knows"):
    quickdraw_sources.folder_source(config, ["cat"])
