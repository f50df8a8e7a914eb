"""End to end: the sbir task on its smoke config (real Sketchy/PACS/QuickDraw files):
train through the CLI, then evaluate, embed a gallery and retrieve as a user does."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from sketchjax.tasks import sbir
from sketchjax.tasks import sbir_config

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SMOKE = "configs/sbir_sketchy.py:smoke"


@pytest.fixture(scope="module")
def data_dir():
  for folder in ("sketchy", "tuberlin_pacs", "quickdraw"):
    if not (DATA / folder).exists():
      pytest.skip(f"real data not found at {DATA / folder}: these tests need the project's "
                  "../shared folder next to the checkout")
  return DATA


def _main(workdir, *args, devices=1):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run([sys.executable, "-m", "sketchjax.main", f"--config={SMOKE}",
                         f"--workdir={workdir}", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)


def _rows(workdir, split):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  """The smoke config trained on one device and on eight, through the CLI."""
  runs = {}
  for devices in (1, 8):
    workdir = tmp_path_factory.mktemp(f"sbir{devices}")
    proc = _main(workdir, "--config.train.log_every=1", devices=devices)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs[devices] = workdir
  return runs


def test_train_leaves_metrics_checkpoints_and_figure(trained):
  workdir = trained[1]
  evals = _rows(workdir, "eval")
  assert [r["step"] for r in evals] == [4]
  metrics = evals[-1]
  assert 0.0 < metrics["map_all"] <= metrics["map_all_voc"] <= 1.0
  assert metrics["num_queries"] > 0 and metrics["skipped_queries"] == 0
  assert {"prec_at_100", "prec_at_200", "map_at_200", "dfsbir_map_10hits"} <= set(metrics)
  assert list((workdir / "tensorboard").glob("events.out.tfevents*"))
  assert (workdir / "retrieval.png").stat().st_size > 5000
  assert "4" in os.listdir(workdir / "checkpoints")


def test_one_and_eight_devices_give_the_same_losses(trained):
  """The same first loss (same parameters and batch; negatives gathered from
  every device); later steps drift apart by float rounding, which Adam's
  normalised updates amplify, so they are compared loosely (step 4 differs by 0.5% on an
  AVX-512 Intel Xeon, by less on an AMD EPYC)."""
  losses = [[r["loss"] for r in _rows(trained[d], "train")] for d in (1, 8)]
  assert len(losses[0]) == 4
  np.testing.assert_allclose(losses[0][0], losses[1][0], rtol=1e-5)
  np.testing.assert_allclose(losses[0], losses[1], rtol=2e-2)


def _config(mode, **retrieve):
  config = sbir_config.apply_variants(sbir_config.base_config(), "smoke")
  config.mode = mode
  config.retrieve.update(retrieve)
  return config


def test_evaluate_matches_the_training_eval(trained):
  result = sbir.run(_config("evaluate"), str(trained[1]))
  training_eval = _rows(trained[1], "eval")[-1]
  np.testing.assert_allclose(result["map_all"], training_eval["map_all"], rtol=1e-5)
  saved = json.loads((trained[1] / "eval_category.json").read_text())
  assert saved["map_all"] == result["map_all"]


def test_finegrained_evaluation_reports_accuracy(trained):
  config = _config("evaluate")
  config.data.split = "finegrained_sketchy25"
  config.data.classes = "airplane,horse"
  result = sbir.run(config, str(trained[1]))
  assert 0.0 <= result["acc_at_1"] <= result["acc_at_10"] <= 1.0


def test_embed_then_retrieve_a_sketch_and_a_drawing(trained, data_dir, tmp_path):
  workdir = trained[1]
  gallery = tmp_path / "gallery"
  gallery.mkdir()
  for name in ("dog", "horse"):
    (gallery / name).symlink_to(data_dir / "tuberlin_pacs" / "photo" / name)
  out = sbir.run(_config("embed", gallery_dir=str(gallery)), str(workdir))
  assert out["images"] == 200
  with np.load(workdir / "gallery.npz") as f:
    assert f["embeddings"].shape == (200, 32)
    np.testing.assert_allclose(np.linalg.norm(f["embeddings"], axis=1), 1.0, rtol=1e-5)
    assert sorted(set(f["labels"])) == ["dog", "horse"]

  sketch = sorted((data_dir / "tuberlin_pacs" / "sketch" / "dog").iterdir())[0]
  result = sbir.run(_config("retrieve", query=str(sketch),
                            gallery_npz=str(workdir / "gallery.npz"), top_k=5), str(workdir))
  assert [r["rank"] for r in result["results"]] == [1, 2, 3, 4, 5]
  scores = [r["score"] for r in result["results"]]
  assert scores == sorted(scores, reverse=True)
  assert all(r["hit"] == (r["label"] == "dog") for r in result["results"])
  assert pathlib.Path(result["figure"]).stat().st_size > 3000

  drawing = data_dir / "quickdraw" / "simplified" / "horse.ndjson"
  from_folder = sbir.run(_config("retrieve", query=f"{drawing}#1", gallery_dir=str(gallery),
                                 top_k=3), str(workdir))
  assert len(from_folder["results"]) == 3 and from_folder["results"][0]["hit"] is not None


def test_bad_queries_and_workdirs_fail_clearly(trained, tmp_path):
  with pytest.raises(FileNotFoundError, match="no query file"):
    sbir.run(_config("retrieve", query=str(tmp_path / "nope.png"),
                     gallery_npz=str(trained[1] / "gallery.npz")), str(trained[1]))
  with pytest.raises(FileNotFoundError, match="holds no trained SBIR model"):
    sbir.run(_config("evaluate"), str(tmp_path))
  with pytest.raises(ValueError, match="not classes of the category split"):
    config = _config("evaluate_init")
    config.data.classes = "unicorn"
    sbir.run(config, str(tmp_path))


def test_training_from_the_tfds_build(data_dir, tmp_path):
  """data.source=tfds: the split is written once as array_record and trained from;
  the pairs are the same as from the files (same first loss). The data folder is a
  tree of links to three Sketchy classes, so the build holds a small whole split."""
  small = tmp_path / "data" / "sketchy"
  for modality in ("photo", "sketch"):
    (small / modality).mkdir(parents=True)
    for name in ("airplane", "cat", "zebra"):
      (small / modality / name).symlink_to(data_dir / "sketchy" / modality / name)
  losses = {}
  for source in ("files", "tfds"):
    config = _config("train")
    config.data.update(source=source, classes="", dir=str(small.parent),
                       tfds_dir=str(tmp_path / "tfds"))
    config.train.update(num_steps=1, log_every=1, eval_every=100)
    sbir.run(config, str(tmp_path / source))
    losses[source] = _rows(tmp_path / source, "train")[0]["loss"]
  assert list((tmp_path / "tfds").glob("sbir_images/category/1.0.0/*.array_record*"))
  np.testing.assert_allclose(losses["tfds"], losses["files"], rtol=1e-6)


def test_untrained_floor_uses_the_backbone_features(data_dir, tmp_path):
  result = sbir.run(_config("evaluate_init"), str(tmp_path))
  assert result["checkpoint"] == "untrained" and 0.0 < result["map_all"] <= 1.0
  assert json.loads((tmp_path / "eval_init_category.json").read_text()) == result
