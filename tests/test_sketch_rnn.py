"""sketch-rnn generators: weight decoding, the LSTM step of the reference code, sampling,
doodleNet recognising what the real generators draw, and the sampling task end to end."""

import base64
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from sketchjax.models import sketch_rnn


def _encode(values) -> str:
  return base64.b64encode(np.asarray(values, "<i2").tobytes()).decode()


def test_decode_weight_scales_int16_by_10_over_32767():
  decoded = sketch_rnn.decode_weight(_encode([32767, -32767, 0, 16384]), (2, 2))
  np.testing.assert_array_equal(
      decoded, np.float32([[10, -10], [0, np.float32(16384 / 32767) * np.float32(10)]]))
  with pytest.raises(ValueError, match="needs 6 values"):
    sketch_rnn.decode_weight(_encode([1, 2, 3, 4]), (2, 3))


def _random_params(seed=0, scale=0.05) -> sketch_rnn.GeneratorParams:
  rng = np.random.default_rng(seed)
  return sketch_rnn.GeneratorParams(*(jnp.asarray(scale * rng.standard_normal(s), jnp.float32)
                                      for s in sketch_rnn._SHAPES))


def test_lstm_step_matches_the_reference_formula():
  """hidden = [x, h] @ [W_xh; W_hh] + b, blocks i, g, f (+1 forget bias), o."""
  params = _random_params()
  rng = np.random.default_rng(1)
  x, c, h = rng.standard_normal((2, 5)), rng.standard_normal((2, 512)), rng.standard_normal((2, 512))
  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  weights = np.concatenate([np.asarray(params.input_kernel), np.asarray(params.recurrent_kernel)])
  hidden = np.concatenate([x, h], 1) @ weights + np.asarray(params.lstm_bias)
  i, g, f, o = (hidden[:, k * 512:(k + 1) * 512] for k in range(4))
  c_ref = c * sigmoid(f + 1.0) + np.tanh(g) * sigmoid(i)
  h_ref = np.tanh(c_ref) * sigmoid(o)
  (c_new, h_new), out = sketch_rnn.lstm_step(params, (jnp.float32(c), jnp.float32(h)),
                                             jnp.float32(x))
  np.testing.assert_allclose(c_new, c_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(h_new, h_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(out, h_new)


def test_stroke5_to_stroke3_scales_and_cuts_at_the_end():
  rows = np.float32([[1, 2, 1, 0, 0], [0.5, 0, 0, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 1],
                     [9, 9, 1, 0, 0]])
  np.testing.assert_allclose(sketch_rnn.stroke5_to_stroke3(rows, 10.0),
                             [[10, 20, 0], [5, 0, 1], [10, 10, 1]])


def test_sampling_is_seeded_and_one_hot_in_the_pen():
  params = _random_params()
  a = np.asarray(sketch_rnn.sample_stroke5(params, jax.random.key(3), 4, 12))
  b = np.asarray(sketch_rnn.sample_stroke5(params, jax.random.key(3), 4, 12))
  assert a.shape == (4, 12, 5)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[..., 2:].sum(-1), 1.0)


def test_low_temperature_follows_the_dominant_component():
  """At temperature -> 0 the offset is the mean of the most likely component."""
  params = _random_params()
  rows = np.asarray(sketch_rnn.sample_stroke5(params, jax.random.key(0), 2, 1, temperature=1e-10))
  zeros = jnp.zeros((2, 512))
  _, h = sketch_rnn.lstm_step(params, (zeros, zeros), jnp.zeros((2, 5)))
  out = sketch_rnn.mixture_output(params, h)
  k = np.argmax(out.mixture_logits, axis=1)
  np.testing.assert_allclose(rows[:, 0, 0], np.asarray(out.mu_x)[np.arange(2), k], atol=1e-3)
  np.testing.assert_allclose(rows[:, 0, 1], np.asarray(out.mu_y)[np.arange(2), k], atol=1e-3)


def test_real_generators_load(pretrained_dir):
  for name in ("bear", "sheep"):  # the two info versions (2 with "gen", 6 with 2)
    info, params = sketch_rnn.load_generator(pretrained_dir / "sketch_rnn" / f"{name}.gen.json")
    assert info.name == name and info.max_seq_len > 100 and info.scale_factor > 10
    assert [p.shape for p in params] == list(sketch_rnn._SHAPES)
    assert all(np.isfinite(np.asarray(p)).all() for p in params)


def test_a_file_that_is_not_a_generator_is_refused(tmp_path):
  bad = tmp_path / "x.gen.json"
  bad.write_text(json.dumps([{"mode": 0, "name": "x"}, [], []]))
  with pytest.raises(ValueError, match="not an unconditional generator"):
    sketch_rnn.load_generator(bad)
  bad.write_text("{")
  with pytest.raises(ValueError, match="x.gen.json: not a sketch-rnn JS model"):
    sketch_rnn.load_generator(bad)


def _as_simplified(stroke3: np.ndarray) -> list[np.ndarray]:
  """A sampled drawing as QuickDraw simplified strokes: min 0, longest side 255."""
  from sketchjax.sketch.sketch import from_stroke3
  points = from_stroke3(stroke3).strokes
  low = np.min([p.min(0) for p in points], axis=0)
  span = max(np.max([p.max(0) for p in points], axis=0) - low)
  return [(p - low) * 255 / max(span, 1e-6) for p in points]


def test_doodlenet_recognises_what_the_generators_draw(pretrained_dir):
  """The generators and doodleNet were trained apart: if doodleNet names the class of
  most samples, the loader and sampler are right (a wrong gate order draws scribbles)."""
  from sketchjax.data import soft_rasterize
  from sketchjax.models.doodlenet import load_doodlenet
  model, variables, names = load_doodlenet(pretrained_dir / "doodlenet")
  hits, total = 0, 0
  for name in ("bicycle", "key", "palm_tree"):
    info, params = sketch_rnn.load_generator(pretrained_dir / "sketch_rnn" / f"{name}.gen.json")
    drawings = [d for d in sketch_rnn.sample(info, params, jax.random.key(0), 16) if len(d) > 4]
    images = soft_rasterize.render_official([_as_simplified(d) for d in drawings])
    logits, _ = model.apply(variables, images[..., None])
    predicted = [names[i] for i in np.argmax(logits, -1)]
    hits += sum(p == name.replace("_", " ") for p in predicted)
    total += len(drawings)
  assert hits / total > 0.6, f"doodleNet names {hits} of {total} samples"


def test_sampling_task_writes_a_training_folder(tmp_path, pretrained_dir):
  from sketchjax.data.formats import folder
  from sketchjax.tasks import sketch_rnn_samples
  spec = importlib.util.spec_from_file_location("samples_config",
                                                REPO / "configs" / "sketch_rnn_samples.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.model_dir = str(pretrained_dir / "sketch_rnn")
  result = sketch_rnn_samples.run(config, str(tmp_path))
  assert sorted(folder.list_category_files(tmp_path)) == ["bear", "palm tree"]
  for split, count in (("train", 6), ("valid", 2), ("test", 2)):
    drawings = folder.read_drawings(tmp_path / "palm tree.npz", split=split)
    assert len(drawings) == count and all(d.sketch.num_points >= 5 for d in drawings)
  assert (tmp_path / "samples.png").stat().st_size > 1000
  assert result["classes"]["bear"]["kept"] == 10
  config.classes = "bear,unicorn"
  with pytest.raises(ValueError, match="no generator for \\['unicorn'\\]"):
    sketch_rnn_samples.run(config, str(tmp_path / "again"))
