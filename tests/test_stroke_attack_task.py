"""The stroke_attack task end to end on its smoke config: doodleNet on real QuickDraw drawings."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from sketchjax.methods import noisy_strokes, raster_attack

REPO = pathlib.Path(__file__).resolve().parents[1]


def _smoke_config(**model):
  spec = importlib.util.spec_from_file_location("stroke_attack_config",
                                                REPO / "configs" / "stroke_attack.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.model.update(model)
  return config


def test_doodlenet_smoke(tmp_path, quickdraw_dir, pretrained_dir):
  from sketchjax.tasks import stroke_attack as task
  config = _smoke_config(kind="doodlenet", path=str(pretrained_dir / "doodlenet"))
  config.data.dir = str(quickdraw_dir / "simplified")
  config.data.noise_strokes = 1  # one stroke of another class's drawing added to each
  summary = task.run(config, str(tmp_path))
  radii = [str(float(r)) for r in config.attack.radii]
  assert json.loads((tmp_path / "summary.json").read_text())["sketches"] == 3
  assert set(summary["strokes"]) == set(raster_attack.STROKE_ORDERS)
  assert set(summary["segments"]) == set(raster_attack.SEGMENT_ORDERS)
  assert set(summary["pgd"]) == set(radii)
  for unit in ("strokes", "segments"):
    for entry in summary[unit].values():
      curve = [entry["success_at_ink"][str(b)] for b in task.INK_BUDGETS]
      assert curve == sorted(curve) and curve[-1] <= entry["success"] <= 1.0
  for name in noisy_strokes.FILTERS:
    assert 0.0 <= summary["filter"][f"added_strokes_dropped_{name}"] <= 1.0
  records = json.loads((tmp_path / "attacks.json").read_text())
  assert len(records) == 3
  for record in records:
    assert len(record["sla"]) == record["num_strokes"]
    for outcome in record["strokes"].values():  # a flip removes strokes, but never all
      assert outcome["success"] == (outcome["prediction"] != record["prediction"])
      assert outcome["success"] == (0 < outcome["removed"] < record["num_strokes"])
    for radius in radii:  # displacements within the budget, in canvas units
      assert record["pgd"][radius]["max_shift"] <= float(radius) * (1 + 1e-4)
    assert set(noisy_strokes.FILTERS) <= set(record["filter"])
  adversarial = np.load(tmp_path / "adversarial.npz")
  assert adversarial["pgd__delta"].shape[:2] == (3, len(radii))
  assert adversarial["strokes__removed_mask"].shape[:2] == (3, len(raster_attack.STROKE_ORDERS))
  for name in ("attack_examples.png", "attack_budgets.png"):
    assert (tmp_path / name).stat().st_size > 1000, name


def test_bad_config(tmp_path):
  from sketchjax.tasks import stroke_attack as task
  config = _smoke_config(kind="doodlenet", path="")
  with pytest.raises(ValueError, match="model.path"):
    task.run(config, str(tmp_path))
  config = _smoke_config(kind="sketchxainet", path="x")
  with pytest.raises(ValueError, match="unknown model.kind"):
    task.run(config, str(tmp_path))
  config.attack.radii = (4.0, -1.0)
  with pytest.raises(ValueError, match="attack.radii"):
    task.run(config, str(tmp_path))


def test_added_strokes_come_from_other_classes():
  from sketchjax.data.records import Drawing
  from sketchjax.sketch.sketch import Sketch
  from sketchjax.tasks import stroke_attack as task
  drawings = [Drawing(Sketch((np.full((2, 2), i), np.full((3, 2), i))), word=w)
              for i, w in enumerate(["cat", "cat", "dog"])]
  noisy = task.add_strokes_of_other_classes(drawings, 2, seed=0)
  for before, after in zip(drawings, noisy):
    assert after.word == before.word and after.sketch.num_strokes == 4
    assert all(np.array_equal(a, b) for a, b in zip(after.sketch.strokes, before.sketch.strokes))
    donors = {float(s[0, 0]) for s in after.sketch.strokes[2:]}
    assert donors <= ({2.0} if before.word == "cat" else {0.0, 1.0})
  with pytest.raises(ValueError, match="two classes"):
    task.add_strokes_of_other_classes(drawings[:2], 1, seed=0)
