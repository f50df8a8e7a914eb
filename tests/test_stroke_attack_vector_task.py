"""The stroke_attack task end to end on SketchXAINet: a smoke model trained on 5 real QuickDraw
classes, attacked on real held-out drawings in their canvas units."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from sketchjax.methods import vector_attack

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = "apple,cat,fish,house,star"


@pytest.fixture(scope="module")
def sketchxainet_workdir(tmp_path_factory):
  """A classify workdir of configs/sketchxai_quickdraw.py:smoke, trained 2 steps."""
  data = REPO.parent / "shared" / "data" / "quickdraw" / "simplified"
  if not data.is_dir():
    pytest.skip(f"{data} is absent (real QuickDraw drawings)")
  workdir = tmp_path_factory.mktemp("attack") / "sketchxainet"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  subprocess.run([sys.executable, "-m", "sketchjax.main",
                  "--config=configs/sketchxai_quickdraw.py:smoke", f"--workdir={workdir}",
                  f"--config.data.dir={data}", f"--config.data.categories={CLASSES}",
                  "--config.train.num_steps=2", "--config.train.eval_every=2",
                  "--config.train.checkpoint_every=2"],
                 cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
  return workdir


def test_sketchxainet_smoke(sketchxainet_workdir, tmp_path, quickdraw_dir):
  from sketchjax.tasks import stroke_attack as task
  spec = importlib.util.spec_from_file_location("stroke_attack_config",
                                                REPO / "configs" / "stroke_attack.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.model.update({"kind": "checkpoint", "path": str(sketchxainet_workdir)})
  config.data.dir = str(quickdraw_dir / "simplified")
  config.data.categories = CLASSES
  summary = task.run(config, str(tmp_path))
  radii = [str(float(r)) for r in config.attack.radii]
  assert summary["sketches"] == 3
  assert set(summary["strokes"]) == set(vector_attack.VECTOR_STROKE_ORDERS)
  assert set(summary["segments"]) == set(vector_attack.VECTOR_SEGMENT_ORDERS)
  assert set(summary["pgd"]) == set(radii)
  records = json.loads((tmp_path / "attacks.json").read_text())
  for record in records:
    assert len(record["sla"]) == record["num_strokes"]
    for outcome in record["strokes"].values():
      assert outcome["success"] == (outcome["prediction"] != record["prediction"])
      assert outcome["success"] == (0 < outcome["removed"] < record["num_strokes"])
    for radius in radii:
      assert record["pgd"][radius]["max_shift"] <= float(radius) * (1 + 1e-4)
  adversarial = np.load(tmp_path / "adversarial.npz")
  assert adversarial["strokes__removed_mask"].shape[:2] == (
      3, len(vector_attack.VECTOR_STROKE_ORDERS))
  np.testing.assert_array_equal(adversarial["scale"], 1.0)  # the polylines are canvas units
  drawings, _ = task.attribution_task.load_drawings(config, CLASSES.split(","))
  assert records[0]["key_id"] == str(drawings[0].key_id)  # records and arrays in data order
  stroke = drawings[0].sketch.strokes[0]
  np.testing.assert_allclose(adversarial["xy"][0, 0, :len(stroke)], stroke, atol=1e-4)
  for name in ("attack_examples.png", "attack_budgets.png"):
    assert (tmp_path / name).stat().st_size > 1000, name
