"""The attribution task end to end on real QuickDraw drawings: doodleNet, SketchXAINet, raster CNN."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _smoke_config(**model):
  spec = importlib.util.spec_from_file_location("attribution_config",
                                                REPO / "configs" / "attribution.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.model.update(model)
  return config


def _check_outputs(workdir: pathlib.Path, methods, sketches: int) -> list[dict]:
  records = json.loads((workdir / "attributions.json").read_text())
  assert len(records) == sketches
  for record in records:
    assert set(record["attributions"]) == set(methods)
    assert all(len(v) == record["num_strokes"] for v in record["attributions"].values())
  summary = json.loads((workdir / "faithfulness.json").read_text())
  assert set(summary["methods"]) == {*methods, "random", "drawing_order"}
  for entry in summary["methods"].values():
    assert 0.0 <= entry["deletion_auc"] <= 1.0 and 0.0 <= entry["insertion_auc"] <= 1.0
  assert json.loads((workdir / "stroke_counts.json").read_text())["sketches"] > sketches
  for name in (*(f"strokes_{m}.png" for m in methods), "deletion_curves.png"):
    assert (workdir / name).stat().st_size > 1000, name
  return records


def test_doodlenet(tmp_path, quickdraw_dir, pretrained_dir):
  from sketchjax.tasks import attribution as task
  config = _smoke_config(kind="doodlenet", path=str(pretrained_dir / "doodlenet"))
  config.data.dir = str(quickdraw_dir / "simplified")
  task.run(config, str(tmp_path))
  records = _check_outputs(tmp_path, task.RASTER_METHODS, sketches=4)
  for record in records:  # P-SLA segments and point heat follow the strokes
    assert len(record["psla_ig_per_segment"]) == record["num_strokes"]
    assert len(record["point_grad"]) == record["num_strokes"]
    # P-SLA summed over a stroke's segments is that stroke's entry
    np.testing.assert_allclose([sum(s) for s in record["psla_ig_per_segment"]],
                               record["attributions"]["psla_ig_by_stroke"], rtol=1e-4, atol=1e-5)
  assert (tmp_path / "psla.png").stat().st_size > 1000


@pytest.fixture(scope="module", params=["sketchxai_quickdraw", "raster_quickdraw"])
def trained_workdir(request, tmp_path_factory):
  """A classify workdir of the config's smoke variant on 5 real classes, trained 2 steps."""
  data = REPO.parent / "shared" / "data" / "quickdraw" / "simplified"
  if not data.is_dir():
    pytest.skip(f"{data} is absent (real QuickDraw drawings)")
  workdir = tmp_path_factory.mktemp("attribution") / request.param
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  subprocess.run([sys.executable, "-m", "sketchjax.main",
                  f"--config=configs/{request.param}.py:smoke", f"--workdir={workdir}",
                  f"--config.data.dir={data}", "--config.data.categories=apple,cat,fish,house,star",
                  "--config.train.num_steps=2", "--config.train.eval_every=2",
                  "--config.train.checkpoint_every=2"],
                 cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
  return request.param, workdir


def test_trained_checkpoint(trained_workdir, tmp_path, quickdraw_dir):
  from sketchjax.tasks import attribution as task
  name, workdir = trained_workdir
  config = _smoke_config(kind="checkpoint", path=str(workdir))
  config.data.dir = str(quickdraw_dir / "simplified")
  task.run(config, str(tmp_path))
  vector = name == "sketchxai_quickdraw"
  records = _check_outputs(tmp_path, task.VECTOR_METHODS if vector else task.RASTER_METHODS,
                           sketches=4)
  assert {r["word"] for r in records} <= {"apple", "cat", "fish", "house", "star"}
  assert (tmp_path / "order_similarity.png").exists() == vector
