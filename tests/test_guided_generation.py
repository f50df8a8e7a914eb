"""Attribution-guided generation: stroke resampling, call accounting, batched SLA, the task."""

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

from sketchjax.data import soft_rasterize as sr
from sketchjax.methods import guided_generation as gg
from sketchjax.methods.drawing_scorer import DrawingScorer, as_simplified
from sketchjax.models import sketch_rnn

REPO = pathlib.Path(__file__).resolve().parents[1]


def _generator(seed=0, never_ends=True, max_seq_len=24) -> gg.Generator:
  """A random sketch-rnn generator (pen_end suppressed: every continuation draws)."""
  rng = np.random.default_rng(seed)
  weights = [0.05 * rng.standard_normal(s).astype(np.float32) for s in sketch_rnn._SHAPES]
  if never_ends:
    weights[1][2] = -100.0  # pen_end logit
  info = sketch_rnn.GeneratorInfo("random", max_seq_len, 10.0)
  return info, sketch_rnn.GeneratorParams(*(jnp.asarray(w) for w in weights))


def _drawing(seed, strokes):
  rng = np.random.default_rng(seed)
  return [rng.uniform(0, 100, (int(rng.integers(1, 5)), 2)) for _ in range(strokes)]


def test_continuation_strokes_split_at_lifts_stop_at_pen_end_and_count():
  rows = np.array([[1, 0, 1, 0, 0], [1, 0, 0, 1, 0],  # stroke 1: 2 points, lifted
                   [0, 2, 1, 0, 0], [0, 2, 0, 1, 0],  # stroke 2
                   [3, 3, 1, 0, 0],  # stroke 3, still drawing at the end row
                   [0, 0, 0, 0, 1], [9, 9, 0, 1, 0]], np.float32)
  strokes = gg.continuation_strokes(rows, 2.0, np.array([10.0, 10.0]), None)
  assert [len(s) for s in strokes] == [2, 2, 1]
  np.testing.assert_allclose(strokes[0], [[12, 10], [14, 10]])
  np.testing.assert_allclose(strokes[1], [[14, 14], [14, 18]])
  np.testing.assert_allclose(strokes[2], [[20, 24]])
  assert len(gg.continuation_strokes(rows, 2.0, np.zeros(2), 2)) == 2


def test_kept_strokes_are_kept_exactly_and_only_negative_ones_are_resampled():
  generator = _generator()
  drawings = [_drawing(1, 4), _drawing(2, 3), []]
  against = [np.array([False, True, False, True]), np.zeros(3, bool), np.zeros(0, bool)]
  out, sampled = gg.resample_against(generator, drawings, against, jax.random.key(0), 0.65)
  assert sampled.tolist() == [True, False, True]
  assert out[0][0] is drawings[0][0] and out[0][1] is drawings[0][2]  # kept, in order
  assert 3 <= len(out[0]) <= 4  # two removed, at most two new
  assert all(not any(s is r for r in drawings[0]) for s in out[0][2:])
  assert all(a is b for a, b in zip(out[1], drawings[1])) and len(out[1]) == 3
  assert len(out[2]) >= 1  # an empty drawing is sampled afresh


def test_resampling_feeds_the_kept_strokes_then_continues():
  """At temperature -> 0 the new strokes are the continuation of the kept strokes alone."""
  info, params = generator = _generator(3)
  drawing = _drawing(4, 3)
  out, _ = gg.resample_against(generator, [drawing], [np.array([False, True, False])],
                               jax.random.key(0), 1e-10)
  kept = [drawing[0], drawing[2]]
  rows = sketch_rnn.prefix_stroke5(kept, info.scale_factor)
  expected = np.asarray(sketch_rnn.continue_stroke5(
      params, rows[None], jnp.array([len(rows)]), jax.random.key(9), num=1,
      steps=info.max_seq_len, temperature=1e-10))[0, 0]
  new = gg.continuation_strokes(expected, info.scale_factor, kept[-1][-1], 1)
  assert len(out[0]) == 3
  np.testing.assert_allclose(out[0][2], new[0], rtol=1e-4, atol=1e-3)


class _FakeGuide:
  """Stroke 0 helps, every other stroke hurts; the target's probability grows with the
  number of points. Counts the drawings it is asked to score."""

  def __init__(self):
    self.evaluations = 0

  def attribute(self, drawings, targets):
    self.evaluations += len(drawings)
    points = np.array([sum(len(s) for s in d) for d in drawings], np.float32)
    p = np.stack([points / (points + 1), 1 / (points + 1)], axis=1)
    return p, [np.where(np.arange(len(d)) == 0, 1.0, -1.0).astype(np.float32)
               for d in drawings]


def test_guided_calls_equal_plain_best_of_k_and_stroke_zero_is_never_touched():
  generator, guide, rounds = _generator(5), _FakeGuide(), 3
  starts = [_drawing(10 + b, 3) for b in range(4)]
  result = gg.guided_generation(generator, guide, starts, 0, rounds, jax.random.key(1), 0.65)
  k = rounds + 1
  # Every round finds a negative stroke (the generator never ends a drawing): the guided
  # arm spends exactly what plain best-of-k spends, k samples and k guide evaluations.
  assert result.generator_samples.tolist() == [k] * 4
  assert result.guide_evaluations.tolist() == [k] * 4
  assert guide.evaluations == result.guide_evaluations.sum()
  assert len(result.history) == k
  for start, final in zip(starts, result.drawings):
    assert final[0] is start[0]  # the helping stroke is never resampled
  probability = guide.attribute(result.drawings, [0] * 4)[0][:, 0]
  np.testing.assert_allclose(result.guide_probability, probability)
  assert (result.guide_probability >= guide.attribute(starts, [0] * 4)[0][:, 0]).all()
  plain = np.array([[0.1, 0.9, 0.2], [0.5, 0.3, 0.7]])
  assert gg.best_of(plain, 1).tolist() == [0, 0]
  assert gg.best_of(plain, 3).tolist() == [1, 2]
  with pytest.raises(ValueError, match="best-of-4"):
    gg.best_of(plain, 4)


def test_a_drawing_without_negative_strokes_costs_nothing_more():
  class Pleased(_FakeGuide):
    def attribute(self, drawings, targets):
      p, sla = super().attribute(drawings, targets)
      return p, [np.abs(a) for a in sla]

  guide = Pleased()
  starts = [_drawing(1, 3), _drawing(2, 2)]
  result = gg.guided_generation(_generator(), guide, starts, 0, 2, jax.random.key(0), 0.65)
  assert result.generator_samples.tolist() == [1, 1]
  assert guide.evaluations == 2
  assert all(all(a is b for a, b in zip(f, s)) for f, s in zip(result.drawings, starts))


def _linear_scorer(steps):
  """A fixed random linear classifier of 28 x 28 images, 5 classes, 3 of them kept."""
  weights = jnp.asarray(np.random.default_rng(0).standard_normal((28 * 28, 5)) * 0.3,
                        jnp.float32)
  images_logits = lambda images: images.reshape(images.shape[0], -1) @ weights
  settings = sr.RasterSettings(size=28, line_width=sr.OFFICIAL.line_width, edge=0.5,
                               supersample=2)
  return DrawingScorer(images_logits, [4, 0, 2], settings, sr.official_pixels,
                       ig_steps=steps, batch_size=4), images_logits


def test_batched_sla_is_complete_and_independent_of_the_batch():
  scorer, images_logits = _linear_scorer(64)
  drawings = [_drawing(s, n) for s, n in ((1, 3), (2, 5), (3, 1), (4, 2), (5, 4))]
  targets = [0, 1, 2, 0, 1]
  probabilities, sla = scorer.attribute(drawings, targets)
  assert scorer.evaluations == 5 and [len(a) for a in sla] == [3, 5, 1, 2, 4]
  blank = jax.nn.log_softmax(images_logits(jnp.zeros((1, 28, 28)))[0, jnp.array([4, 0, 2])])
  for b, t in enumerate(targets):  # IG completeness: sum = log p(drawing) - log p(blank)
    gap = np.log(probabilities[b, t]) - float(blank[t])
    assert abs(sla[b].sum() - gap) < 0.02 * max(abs(gap), 0.05), (b, sla[b].sum(), gap)
  np.testing.assert_allclose(scorer.probabilities(drawings), probabilities, rtol=1e-5,
                             atol=1e-6)
  alone_p, alone_sla = scorer.attribute(drawings[1:2], targets[1:2])
  np.testing.assert_allclose(alone_p[0], probabilities[1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(alone_sla[0], sla[1], rtol=1e-4, atol=1e-5)
  assert scorer.probabilities([[]]).tolist() == [[0.0, 0.0, 0.0]]  # no stroke, no class


def test_as_simplified_keeps_every_stroke_in_order():
  drawing = [np.array([[0.0, 0.0], [5.0, 0.1], [10.0, 0.0]]), np.array([[50.0, 100.0]])]
  view = as_simplified(drawing)
  assert len(view) == 2 and len(view[1]) == 1
  np.testing.assert_allclose(view[0], [[0, 0], [25.5, 0]])  # RDP drops the middle point
  np.testing.assert_allclose(view[1], [[127.5, 255]])


def test_bad_directions_and_unknown_classes_are_named():
  from sketchjax.tasks import guided_generation as task
  assert task.parse_directions("doodlenet>raster, raster>doodlenet") == [
      ("doodlenet", "raster"), ("raster", "doodlenet")]
  for bad in ("doodlenet>doodlenet", "doodlenet", "vit>raster", ""):
    with pytest.raises(ValueError):
      task.parse_directions(bad)
  assert task.class_index(["cat", "palm_tree", "bear"], ["bear", "palm tree"], "m") == [2, 1]
  with pytest.raises(ValueError, match="no class \\['unicorn'\\]"):
    task.class_index(["cat"], ["unicorn"], "m")


@pytest.fixture(scope="module")
def raster_workdir(tmp_path_factory):
  """A raster_cnn smoke workdir of bear and palm tree, trained 2 steps on real drawings."""
  data = REPO.parent / "shared" / "data" / "quickdraw" / "simplified"
  if not (data / "bear.ndjson").exists():
    pytest.skip(f"{data} is absent (real QuickDraw drawings)")
  workdir = tmp_path_factory.mktemp("guided") / "raster"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  subprocess.run([sys.executable, "-m", "sketchjax.main",
                  "--config=configs/raster_quickdraw.py:smoke", f"--workdir={workdir}",
                  f"--config.data.dir={data}", "--config.data.categories=bear,palm tree",
                  "--config.train.num_steps=2", "--config.train.eval_every=2",
                  "--config.train.checkpoint_every=2"],
                 cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
  return workdir


def test_task_end_to_end_on_the_smoke_config(raster_workdir, pretrained_dir, tmp_path):
  from sketchjax.tasks import guided_generation as task
  spec = importlib.util.spec_from_file_location("guided_config",
                                                REPO / "configs" / "guided_generation.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.model_dir = str(pretrained_dir / "sketch_rnn")
  config.classifiers.doodlenet = str(pretrained_dir / "doodlenet")
  config.classifiers.raster = str(raster_workdir)
  summary = task.run(config, str(tmp_path))
  k = config.rounds + 1
  big_k = k * (config.ig_steps + 1)
  assert set(summary["directions"]) == {"doodlenet>raster"}
  for direction in summary["directions"].values():
    assert direction[f"plain_best_of_{k}"]["guide_evaluations"] == k
    assert direction["guided"]["guide_evaluations_max"] <= k
    assert direction["guided"]["generator_samples_max"] <= k
    assert direction["plain_single_all_samples"]["drawings"] == 2 * 2 * big_k
    assert direction["guided"]["drawings"] == 4 and set(direction["per_class"]) == {
        "bear", "palm tree"}
    for arm in ("plain_single", f"plain_best_of_{k}", f"plain_best_of_{big_k}", "guided"):
      assert 0.0 <= direction[arm]["accuracy"] <= 1.0
  assert set(summary["attribution"]) == {"doodlenet"}  # the guides' SLA
  attribution = summary["attribution"]["doodlenet"]
  assert attribution["strokes"] > 0
  assert sum(v["strokes"] for v in attribution["by_position"].values()) == attribution["strokes"]
  shares = [attribution[f"share_{n}"] for n in ("helps", "hurts", "noise")]
  assert abs(sum(shares) - 1.0) < 1e-6
  drawings = json.loads((tmp_path / "drawings.json").read_text())
  assert all(len(v) == 4 for v in drawings.values())
  for name in ("generated_sla_doodlenet.png", "guided_doodlenet_to_raster.png",
               "calls_doodlenet_to_raster.png"):
    assert (tmp_path / name).stat().st_size > 1000, name
