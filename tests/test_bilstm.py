"""Tests of the stroke shape encoder (stacked BiLSTM with lengths)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models.bilstm import StrokeShapeEncoder, reverse_within_length

HIDDEN = 8


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _lstm_numpy(x, w_in, w_rec, bias):
  """PyTorch-semantics LSTM (gates i, f, g, o) over one unpadded sequence [T, F] -> [T, h]."""
  h = np.zeros(w_rec.shape[0])
  c = np.zeros_like(h)
  out = []
  for x_t in x:
    i, f, g, o = np.split(x_t @ w_in + h @ w_rec + bias, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    out.append(h)
  return np.stack(out)


def _encoder_numpy(params, x, num_layers):
  """Reference stacked BiLSTM on one truncated sequence [L, 4] -> summed [H]."""
  for layer in range(num_layers):
    p = {k: np.asarray(v, np.float64) for k, v in params[f"layer_{layer}"].items()}
    forward = _lstm_numpy(x, p["input_kernel"][0], p["recurrent_kernel"][0], p["bias"][0])
    backward = _lstm_numpy(x[::-1], p["input_kernel"][1], p["recurrent_kernel"][1],
                           p["bias"][1])[::-1]
    x = np.concatenate([forward, backward], -1)
  return x.sum(0)


def _random_strokes(rng, lengths, num_points):
  """Random rows with arbitrary junk past each length (it must never matter)."""
  points = rng.normal(size=(len(lengths), num_points, 4)).astype(np.float32)
  return points, np.asarray(lengths, np.int32)


@pytest.fixture(scope="module")
def encoder_and_params():
  model = StrokeShapeEncoder(HIDDEN, num_layers=2)
  params = model.init(jax.random.key(0), jnp.zeros((1, 5, 4)), jnp.ones((1,), jnp.int32))
  return model, params


def test_reverse_within_length_is_an_involution():
  x = jnp.arange(12.0).reshape(2, 6).T  # time-major [6, 2]
  lengths = jnp.array([4, 0])
  reversed_ = reverse_within_length(x, lengths)
  np.testing.assert_array_equal(reversed_.T, [[3, 2, 1, 0, 4, 5], [6, 7, 8, 9, 10, 11]])
  np.testing.assert_array_equal(reverse_within_length(reversed_, lengths), x)


def test_shapes_zero_length_and_init_range(encoder_and_params):
  model, params = encoder_and_params
  points, lengths = _random_strokes(np.random.default_rng(0), [3, 0, 7, 1], 7)
  out = model.apply(params, points, lengths)
  assert out.shape == (4, HIDDEN) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out[1], 0.0)
  bound = 1 / np.sqrt(HIDDEN // 2)
  for leaf in jax.tree.leaves(params):
    assert np.all(np.abs(leaf) <= bound)
  assert params["params"]["layer_1"]["input_kernel"].shape == (2, HIDDEN, 4 * HIDDEN // 2)


def test_matches_pytorch_semantics_on_truncated_sequences(encoder_and_params):
  """Padded + lengths == each direction run on the truncated sequence (pack_padded_sequence)."""
  model, params = encoder_and_params
  lengths = [5, 2, 9, 1]
  points, lens = _random_strokes(np.random.default_rng(1), lengths, 9)
  out = np.asarray(model.apply(params, points, lens))
  for n, length in enumerate(lengths):
    expected = _encoder_numpy(params["params"], points[n, :length].astype(np.float64), 2)
    np.testing.assert_allclose(out[n], expected, rtol=2e-5, atol=2e-5)


def test_padding_does_not_change_output(encoder_and_params):
  model, params = encoder_and_params
  points, lens = _random_strokes(np.random.default_rng(2), [4, 6], 6)
  short = model.apply(params, points[:1, :4], lens[:1])
  padded = model.apply(params, np.pad(points, ((0, 0), (0, 10), (0, 0)), constant_values=3.0),
                       lens)
  np.testing.assert_allclose(padded[0], short[0], rtol=1e-6, atol=1e-6)


def test_mean_reduction_divides_by_length(encoder_and_params):
  _, params = encoder_and_params
  points, lens = _random_strokes(np.random.default_rng(3), [4, 0], 5)
  summed = StrokeShapeEncoder(HIDDEN).apply(params, points, lens)
  mean = StrokeShapeEncoder(HIDDEN, reduce="mean").apply(params, points, lens)
  np.testing.assert_allclose(mean[0], summed[0] / 4, rtol=1e-6)
  np.testing.assert_array_equal(mean[1], 0.0)


def test_gradients_are_finite(encoder_and_params):
  model, params = encoder_and_params
  points, lens = _random_strokes(np.random.default_rng(4), [3, 0, 5], 5)
  grads = jax.grad(lambda p, x: model.apply(p, x, lens).sum(), argnums=(0, 1))(params, points)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  np.testing.assert_array_equal(grads[1][1], 0.0)  # an empty slot gets no gradient
