"""End to end: the classification task on its smoke configs, through the CLI."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _main(*args, check=True):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return subprocess.run([sys.executable, "-m", "sketchjax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600, check=check)


def _metrics(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_quickstart_smoke_trains_and_leaves_its_outputs(tmp_path):
  workdir = tmp_path / "qs"
  _main("--config=configs/quickstart.py:smoke", f"--workdir={workdir}",
        "--config.train.num_steps=4", "--config.train.eval_every=2",
        "--config.train.checkpoint_every=2")
  rows = _metrics(workdir)
  assert all("step" in r for r in rows)
  assert any(r.get("split") == "eval" and "top1" in r for r in rows)
  assert list((workdir / "tensorboard").glob("**/events.out.tfevents*"))
  assert (workdir / "predictions.png").stat().st_size > 1000
  assert json.loads((workdir / "classes.json").read_text())[0] == "square"
  checkpoints = workdir / "checkpoints"
  assert sorted(p.name for p in checkpoints.iterdir() if p.name.isdigit())[-1] == "4"

  # mode=learning_curve: every kept checkpoint on the run's test split, as the run's evals.
  _main("--config=configs/quickstart.py:smoke", f"--workdir={workdir}",
        "--config.mode=learning_curve")
  curve = json.loads((workdir / "learning_curve.json").read_text())["rows"]
  evals = {r["step"]: r for r in rows if r.get("split") == "eval"}
  assert [r["step"] for r in curve] == sorted(evals) == [2, 4]
  batch_size = json.loads((workdir / "config.json").read_text())["train"]["batch_size"]
  for row in curve:
    assert row["drawings_seen"] == row["step"] * batch_size
    for key in ("top1", "top5", "loss"):
      assert row[key] == pytest.approx(evals[row["step"]][key], rel=1e-5), key
  assert (workdir / "learning_curve.png").stat().st_size > 1000


def test_bad_config_key_fails_with_a_clear_message(tmp_path):
  proc = _main("--config=configs/quickstart.py:smoke", f"--workdir={tmp_path}",
               "--config.train.no_such_key=1", check=False)
  assert proc.returncode != 0
  assert "no_such_key" in proc.stderr


def test_quickdraw_smoke_then_evaluate_a_folder(tmp_path, quickdraw_dir):
  from sketchjax.tasks import classify
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", REPO / "configs/sketchxai_quickdraw.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.data.dir = str(quickdraw_dir / "simplified")
  workdir = tmp_path / "qd"
  metrics = classify.run(config, str(workdir))
  assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
  assert json.loads((workdir / "classes.json").read_text()) == ["apple", "cat", "fish",
                                                                 "house", "star"]

  eval_dir = tmp_path / "eval"
  eval_dir.mkdir()
  for name in ("apple", "star"):
    (eval_dir / f"{name}.ndjson").symlink_to(quickdraw_dir / "simplified" / f"{name}.ndjson")
  config.mode = "evaluate"
  config.data.eval_dir = str(eval_dir)
  result = classify.run(config, str(workdir))
  assert result["sketches"] == 40 and result["count"] == 40
  assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
  assert json.loads((workdir / "eval_eval.json").read_text())["top1"] == result["top1"]

  (eval_dir / "zebra.ndjson").symlink_to(quickdraw_dir / "simplified" / "zebra.ndjson")
  with pytest.raises(ValueError, match="zebra"):
    classify.run(config, str(workdir))
  config.data.unknown_classes = "skip"  # the known classes, listing the others
  result = classify.run(config, str(workdir))
  assert result["sketches"] == 40 and result["skipped_classes"] == ["zebra"]
