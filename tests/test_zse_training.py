"""ZSE-SBIR training: the official sampler (and its off-by-one as a switch), the
2 triplet + 4 RN loss by hand, and the task end to end on its smoke config
(1 and 8 devices give the same losses; evaluate, selection and explain on that model)."""

import collections
import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import SHARED_DATA, need
from sketchjax.data import image_pipeline
from sketchjax.methods import sbir_losses

REPO = pathlib.Path(__file__).resolve().parents[1]


def _draw(off_by_one):
  sketch_members = {c: np.arange(10 * c, 10 * c + 4) for c in range(4)}
  photo_members = {c: np.arange(100 + 10 * c, 100 + 10 * c + 3) for c in range(4)}
  return image_pipeline.ZseDraw(sketch_members, photo_members, off_by_one)


@pytest.mark.parametrize("off_by_one", [False, True])
def test_sampler_draws_a_positive_and_a_negative_pair(off_by_one):
  draw, rng = _draw(off_by_one), np.random.default_rng(0)
  firsts = collections.Counter()
  for element in range(400):
    s, s_neg, p_pos, p_neg = draw(element, rng)
    c0, c2 = s // 10, (p_neg - 100) // 10
    assert s_neg // 10 == c0 and (p_pos - 100) // 10 == c0 and c2 != c0
    firsts.update(x % 10 == 0 for x in (s, s_neg, p_pos, p_neg))
  # Uniform files: a class's first file is drawn; the code's randint(1, n) never draws it.
  assert (firsts[True] == 0) == off_by_one


def test_official_sampler_needs_two_files_a_class():
  draw = image_pipeline.ZseDraw({c: np.array([c]) for c in range(3)},
                                {c: np.array([c]) for c in range(3)}, True)
  with pytest.raises(ValueError, match="randint"):
    draw(0, np.random.default_rng(0))


def test_zse_loss_by_hand():
  logits = jnp.array([0.0, 2.0, 0.0, -2.0])  # 2 positive, then 2 negative pairs
  anchor = jnp.array([[0.0, 0.0], [1.0, 0.0]])
  positive = jnp.array([[0.0, 1.0], [1.0, 0.0]])
  negative = jnp.array([[0.0, 3.0], [1.0, 0.5]])
  loss, parts = sbir_losses.zse_sbir_loss(logits, anchor, positive, negative)
  sig = 1 / (1 + np.exp(-np.array([0.0, 2.0, 0.0, -2.0])))
  rn = np.mean((sig - [0.99, 0.99, 0.01, 0.01]) ** 2)
  d = lambda a, b: np.sqrt(np.sum((np.asarray(a) - np.asarray(b) + 1e-6) ** 2))
  triplet = np.mean([max(d(anchor[i], positive[i]) - d(anchor[i], negative[i]) + 1.0, 0)
                     for i in range(2)])
  np.testing.assert_allclose(parts["rn_mse"], rn, rtol=1e-5)
  np.testing.assert_allclose(parts["triplet"], triplet, rtol=1e-5)
  np.testing.assert_allclose(loss, 2 * triplet + 4 * rn, rtol=1e-5)


def _train(workdir, devices, *flags):
  need(SHARED_DATA / "sketchy")
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  proc = subprocess.run(
      [sys.executable, "-m", "sketchjax.main", "--config=configs/zse_sketchy.py:smoke",
       f"--config.data.dir={SHARED_DATA}", "--config.model.dropout=0",
       f"--workdir={workdir}", *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Workdirs of the smoke training on 1 and on 8 devices, both evaluated every 2
  steps and selecting on the held-out seen classes."""
  root = tmp_path_factory.mktemp("zse")
  flags = ("--config.train.select_on=seen_heldout", "--config.train.eval_every=2")
  return {devices: (root / str(devices), _train(root / str(devices), devices, *flags))
          for devices in (1, 8)}


def test_training_on_one_and_eight_devices(trained):
  (workdir, one), (_, eight) = trained[1], trained[8]
  losses = [[r["loss"] for r in rows if r["split"] == "train"] for rows in (one, eight)]
  assert len(losses[0]) == 2 and all(np.isfinite(losses[0]))
  np.testing.assert_allclose(losses[0], losses[1], rtol=2e-4)
  final = [r for r in one if r["split"] == "eval"][-1]
  assert final["num_queries"] == 125 and 0 < final["map_all"] <= 1  # 5 unseen classes
  assert {"triplet", "rn_mse"} <= set(next(r for r in one if r["split"] == "train"))
  # Ours-Ret and the exact Ours-RN of the trained model (the latest checkpoint).
  from sketchjax.tasks import zse
  config = _config("smoke")
  config.mode, config.data.dir = "evaluate", str(SHARED_DATA)
  result = zse.run(config, str(workdir))
  np.testing.assert_allclose(result["map_all"], final["map_all"], rtol=1e-5)
  assert result["rn_num_queries"] == 125 and 0 < result["rn_map_all"] <= 1
  assert (workdir / "eval_zeroshot_sketchy25.json").exists()


def _config(arg):
  spec = importlib.util.spec_from_file_location("zse_config", REPO / "configs" / "zse_sketchy.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_seen_heldout_split_is_disjoint_and_fixed(sketchy_dir):
  from sketchjax.data import sbir_splits
  dirs = sbir_splits.DataDirs(sketchy=sketchy_dir)
  split = sbir_splits.make_split("zeroshot_sketchy25", dirs)
  held = sbir_splits.seen_heldout_split(split)
  key = lambda i: (i.label, i.instance)  # noqa: E731
  train = {key(i) for i in held.train.photos + held.train.sketches}
  test = {key(i) for i in held.test.photos + held.test.sketches}
  assert not train & test  # no photo id (and so no sketch of it) on both sides
  assert held.train.classes == held.test.classes == split.train.classes
  assert not set(held.test.classes) & set(split.test.classes)
  assert (sorted(held.train.photos + held.test.photos) == sorted(split.train.photos)
          and sorted(held.train.sketches + held.test.sketches) == sorted(split.train.sketches))
  assert len(held.test.photos) == 5 * len(split.train.classes)  # 1 sketched + 4 others a class
  # Fixed by the names: the same from the items in any order.
  shuffled = dataclasses.replace(split, train=sbir_splits.SplitSide(
      split.train.photos[::-1], split.train.sketches[::-1], split.train.classes))
  assert sbir_splits.seen_heldout_split(shuffled) == held
  assert held.name == "zeroshot_sketchy25_seen_heldout" and held.relevance == "class"


def test_selection_on_seen_heldout_keeps_the_best_step(trained):
  workdir, rows = trained[1]
  evals = [r for r in rows if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [2, 4]
  assert all(0 < r["heldout_map_all"] <= 1 and 0 < r["map_all"] <= 1 for r in evals)
  best = json.loads((workdir / "best.json").read_text())
  chosen = max(evals, key=lambda r: (r["heldout_map_all"], -r["step"]))
  assert best == {"step": chosen["step"], "metric": "heldout_map_all",
                  "value": pytest.approx(chosen["heldout_map_all"]), "select_on": "seen_heldout"}
  from sketchjax.tasks import zse
  config = _config("smoke")
  config.mode, config.data.dir, config.eval.checkpoint = "evaluate", str(SHARED_DATA), "best"
  result = zse.run(config, str(workdir))
  np.testing.assert_allclose(result["map_all"], chosen["map_all"], rtol=1e-5)
  assert f"step {chosen['step']}" in result["checkpoint"]


def test_vit_ret_baseline_trains_the_self_attention_ret_token_only():
  from sketchjax.models import zse_sbir
  from sketchjax.tasks import zse
  config = _config("smoke,vit_ret")
  config.model.pretrained = ""
  model = zse_sbir.zse_small(image_size=64, dropout=0.0, num_layers=1)
  objective = zse.zse_objective(model, config)
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
           for k in ("sketch", "sketch_negative", "photo_positive", "photo_negative")}
  params = objective.init(None, batch)
  (value, parts), grads = jax.value_and_grad(objective.loss, has_aux=True)(
      params, batch, jax.random.key(0))
  assert set(parts) == {"triplet"} and value == parts["triplet"] > 0
  norm = lambda tree: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))  # noqa: E731
  assert norm(grads["sa"]) > 0
  assert all(norm(grads[k]) == 0 for k in grads if k != "sa")  # CA, anchor conv, RN
  with pytest.raises(ValueError, match="loss.kind"):
    config.loss.kind = "rn_only"
    zse.zse_objective(model, config)


def test_explain_mode_on_the_trained_model(trained):
  workdir = trained[1][0]
  from sketchjax.tasks import zse
  config = _config("smoke")
  config.mode, config.data.dir = "explain", str(SHARED_DATA)
  result = zse.run(config, str(workdir))
  out = workdir / "explain"
  saved = json.loads((out / "explain.json").read_text())
  assert saved["query_choice"] == "every 20-th of 125 test sketches in split order"
  assert len(saved["queries"]) == 6 and all(len(q["top"]) == 3 for q in saved["queries"])
  stats = saved["statistics_top1"]
  assert stats["hits"]["pairs"] + stats["misses"]["pairs"] == stats["all"]["pairs"] == 6
  assert saved["top1_hit_rate"] == pytest.approx(stats["hits"]["pairs"] / 6)
  first = saved["queries"][0]["top"][0]
  assert len(first["ca_sketch_to_photo"]["key"]) == 4  # 64 px: a 2 x 2 token grid
  assert first["rank_score"] == pytest.approx(first["ret_cosine"], abs=1e-5)  # ranked by Ret
  ranked = [t["rank_score"] for t in saved["queries"][0]["top"]]
  assert ranked == sorted(ranked, reverse=True)
  assert {pathlib.Path(f).name for f in result["figures"]} >= {"patch_replacement.png",
                                                              "retrieve_0.png"}
  assert all(pathlib.Path(f).stat().st_size > 1000 for f in result["figures"])
