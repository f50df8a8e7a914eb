"""doodleNet evaluated through the classify task (model.kind=doodlenet): its 345 outputs
restricted to the evaluated classes, top-k and standard errors."""

import json

import numpy as np
import pytest

from conftest import SHARED_DATA, SHARED_PRETRAINED, need
from sketchjax.data import soft_rasterize as sr
from sketchjax.data.formats import folder
from sketchjax.models import doodlenet
from sketchjax.tasks import classify, classify_config, classify_doodlenet

CLASSES = ("cat", "apple", "snowman")


def test_restricted_columns_follow_the_evaluated_classes():
  np.testing.assert_array_equal(
      classify_doodlenet.restricted_columns(("a", "b", "c", "d"), ("c", "a")), [2, 0])
  with pytest.raises(ValueError, match=r"no class \['zebra crossing'\]"):
    classify_doodlenet.restricted_columns(("a", "b"), ("a", "zebra crossing"))


def test_top_k_hits_and_standard_error_by_hand():
  logits = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 1.0, 0.0]])
  labels = np.array([1, 2, 1])
  np.testing.assert_array_equal(classify_doodlenet.top_k_hits(logits, labels, 1),
                                [False, True, False])  # a tie goes to the lower index
  np.testing.assert_array_equal(classify_doodlenet.top_k_hits(logits, labels, 2),
                                [True, True, True])
  p, se = classify_doodlenet.accuracy(np.array([True, False, False, False]))
  assert p == 0.25 and se == pytest.approx(np.sqrt(0.25 * 0.75 / 4))


def test_evaluate_a_folder_equals_doodlenet_restricted_by_hand(tmp_path):
  source = need(SHARED_DATA / "quickdraw" / "simplified")
  path = need(SHARED_PRETRAINED / "doodlenet")
  data = tmp_path / "data"
  data.mkdir()
  for name in CLASSES:
    (data / f"{name}.ndjson").symlink_to(source / f"{name}.ndjson")
  config = _config(data, path)
  result = classify.run(config, str(tmp_path / "work"))

  model, variables, names = doodlenet.load_doodlenet(path)
  classes = sorted(CLASSES)
  drawings = {c: folder.read_drawings(data / f"{c}.ndjson", split="test") for c in classes}
  labels = np.concatenate([[i] * len(drawings[c]) for i, c in enumerate(classes)])
  images = sr.render_official([d.sketch.strokes for c in classes for d in drawings[c]])
  logits = np.asarray(model.apply(variables, images[..., None])[0])
  predicted = np.argmax(logits[:, [names.index(c) for c in classes]], -1)
  hits, total = int(np.sum(predicted == labels)), len(labels)
  assert result["sketches"] == total == 60 and result["classes"] == 3
  assert result["top1"] == pytest.approx(hits / total)
  assert result["top5"] == 1.0  # 3 classes
  written = json.loads((tmp_path / "work" / "eval_doodlenet_data.json").read_text())
  assert written["top1"] == result["top1"] and set(written["per_class_top1"]) == set(CLASSES)


def test_doodlenet_is_evaluate_only(tmp_path):
  config = _config(tmp_path, "x")
  config.mode = "train"
  with pytest.raises(ValueError, match="use it with --config.mode=evaluate"):
    classify.run(config, str(tmp_path))


def _config(eval_dir, path):
  config = classify_config.base_config()
  config.mode, config.model.kind, config.model.path = "evaluate", "doodlenet", str(path)
  config.data.eval_dir = str(eval_dir)
  return config
