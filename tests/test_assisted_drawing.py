"""Assisted drawing's analysis on a small linear classifier and random sketch-rnn weights:
units, stroke labels, batched SLA = the attribution module's IG, ranked suggestions, and one
compiled shape for drawings of up to 16 strokes. The real models: tests/test_draw_e2e.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.data import soft_rasterize as sr
from sketchjax.methods import assisted_drawing as ad
from sketchjax.methods import attribution
from sketchjax.models import sketch_rnn

CLASSES = ("cat", "dog", "palm tree", "bear")


def _generator(seed: int) -> ad.Generator:
  rng = np.random.default_rng(seed)
  params = sketch_rnn.GeneratorParams(*(jnp.asarray(0.05 * rng.standard_normal(s), jnp.float32)
                                        for s in sketch_rnn._SHAPES))
  return sketch_rnn.GeneratorInfo("x", 100, 20.0), params


_WEIGHTS = 0.1 * np.random.default_rng(0).standard_normal((28, 28, len(CLASSES)))


def _logits(images):
  return jnp.einsum("bhw,hwc->bc", images, jnp.asarray(_WEIGHTS, jnp.float32))


@pytest.fixture(scope="module")
def assistant():
  generators = {"palm tree": _generator(1), "bear": _generator(2)}
  return ad.Assistant(_logits, CLASSES, generators,
                      ad.AssistSettings(candidates=6, suggestions=3, ig_steps=8))


def _drawing(count: int, seed: int = 0) -> list[np.ndarray]:
  """`count` random-walk strokes of 1 to 40 points in a 300-unit box."""
  rng = np.random.default_rng(seed)
  return [rng.uniform(0, 300, 2) + np.cumsum(rng.normal(0, 8, (rng.integers(1, 40), 2)), 0)
          for _ in range(count)]


def test_frame_maps_to_the_quickdraw_box_and_back():
  strokes = [np.array([[10.0, 20.0], [110.0, 40.0]]), np.array([[60.0, 70.0]])]
  frame = ad.Frame.of(strokes)
  drawn = np.concatenate([frame.to_drawing(s) for s in strokes])
  np.testing.assert_allclose(drawn.min(0), 0)
  assert drawn.max() == pytest.approx(255)
  np.testing.assert_allclose(frame.to_caller(frame.to_drawing(strokes[0])), strokes[0])


def test_stroke_labels():
  assert ad.stroke_labels(np.array([2.0, -1.0, 0.1, 0.0]), 0.05) == [
      "helps", "hurts", "noise", "noise"]
  assert ad.stroke_labels(np.zeros(2), 0.05) == ["noise", "noise"]


def test_batched_sla_is_the_attribution_modules_integrated_gradients(assistant):
  drawing = ad.simplified(_drawing(5), ad.Frame.of(_drawing(5)), 2.0)
  xy, lens, num_segments, num_pairs = ad._pixel_batch([drawing], assistant.raster,
                                                      ad._DRAWING_FLOOR)
  _, target, ig = assistant._explain(xy[0], lens[0], 2, num_segments=num_segments,
                                     num_pairs=num_pairs)
  coverage = sr.draw_strokes(xy[0], lens[0], assistant.raster, num_segments=num_segments,
                             num_pairs=num_pairs)
  score = lambda opacity: jax.nn.log_softmax(_logits(sr.composite(coverage, opacity)[None])[0])[2]
  present = jnp.asarray(lens[0] > 0, jnp.float32)
  reference = jax.jit(lambda x: attribution.integrated_gradients(
      score, x, jnp.zeros_like(x), steps=8))(present)
  assert int(target) == 2
  np.testing.assert_allclose(ig, reference, rtol=1e-4, atol=1e-5)


def test_analysis_ranks_suggestions_by_the_targets_gain(assistant):
  drawing = _drawing(4)
  answer = assistant.analyze(drawing, seed=1)
  probabilities = [c["probability"] for c in answer["classes"]]
  assert probabilities == sorted(probabilities, reverse=True)
  assert answer["target"] == answer["classes"][0]["name"]
  assert len(answer["strokes"]) == 4
  gains = [s["gain"] for s in answer["suggestions"]]
  assert 1 <= len(gains) <= 3 and gains == sorted(gains, reverse=True)
  for suggestion in answer["suggestions"]:
    assert suggestion["probability"] == pytest.approx(
        answer["target_probability"] + suggestion["gain"], abs=1e-5)
  chosen = assistant.analyze(drawing, target="palm tree", seed=1)
  assert chosen["target"] == chosen["generator"] == "palm tree"
  with pytest.raises(ValueError, match="unknown target 'unicorn'"):
    assistant.analyze(drawing, target="unicorn")


def test_the_answer_does_not_depend_on_the_callers_units(assistant):
  """Scaled and moved, the same drawing gets the same analysis, suggestions in its units."""
  drawing = _drawing(3, seed=4)
  a = assistant.analyze(drawing, target="bear", seed=2)
  b = assistant.analyze([2.0 * s + 50.0 for s in drawing], target="bear", seed=2)
  for x, y in zip(a["classes"], b["classes"]):
    assert x["name"] == y["name"] and x["probability"] == pytest.approx(y["probability"], abs=1e-5)
  np.testing.assert_allclose([s["attribution"] for s in a["strokes"]],
                             [s["attribution"] for s in b["strokes"]], atol=1e-4)
  assert len(a["suggestions"]) == len(b["suggestions"])
  for x, y in zip(a["suggestions"], b["suggestions"]):
    np.testing.assert_allclose(2.0 * np.array(x["points"]) + 50.0, y["points"], atol=0.05)


def test_a_scribble_of_thousands_of_segments_is_refused(assistant):
  scribble = np.random.default_rng(0).uniform(0, 400, (3000, 2))
  with pytest.raises(ad.TooComplex, match="segments after simplification, at most 1024"):
    assistant.analyze([scribble])


def test_the_generator_is_the_targets_or_the_likeliest_class(assistant):
  probabilities = np.array([0.5, 0.2, 0.1, 0.2])
  assert assistant.pick_generator("palm tree", probabilities) == "palm tree"
  assert assistant.pick_generator("cat", probabilities) == "bear"


def test_drawings_of_up_to_16_strokes_compile_one_shape(assistant):
  for count in (1, 2, 5, 9, 16):
    assistant.analyze(_drawing(count, seed=count))
  assert assistant._explain._cache_size() == 1
