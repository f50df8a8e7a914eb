"""sketch-rnn continues partial drawings: the prefix fed through the decoder, then sampled."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models import sketch_rnn


def _random_params(seed=0, scale=0.05) -> sketch_rnn.GeneratorParams:
  rng = np.random.default_rng(seed)
  return sketch_rnn.GeneratorParams(*(jnp.asarray(scale * rng.standard_normal(s), jnp.float32)
                                      for s in sketch_rnn._SHAPES))


def _rows(seed, length):
  rng = np.random.default_rng(seed)
  rows = np.zeros((length, 5), np.float32)
  rows[:, :2] = rng.standard_normal((length, 2))
  rows[np.arange(length), 2 + rng.integers(0, 2, length)] = 1.0
  return rows


def test_feeding_equals_stepping_by_hand_and_stops_at_each_length():
  params = _random_params()
  rows = np.stack([_rows(1, 7), _rows(2, 7)])
  lengths = np.array([7, 3])
  carry = sketch_rnn.feed(params, sketch_rnn.start_state(params, 2), jnp.asarray(rows),
                          jnp.asarray(lengths))
  for b, length in enumerate(lengths):
    zeros = jnp.zeros((1, 512))
    by_hand, _ = sketch_rnn.lstm_step(params, (zeros, zeros), jnp.zeros((1, 5)))
    for t in range(length):
      by_hand, _ = sketch_rnn.lstm_step(params, by_hand, jnp.asarray(rows[b, t:t + 1]))
    for got, want in zip(carry, by_hand):
      np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=1e-6)


def test_an_empty_prefix_continues_as_a_fresh_sample():
  params = _random_params()
  rng = jax.random.key(5)
  fresh = sketch_rnn.sample_stroke5(params, rng, 1, 9)
  continued = sketch_rnn.continue_stroke5(params, jnp.zeros((1, 4, 5)), jnp.array([0]), rng,
                                          num=1, steps=9)
  np.testing.assert_allclose(continued[0], fresh, atol=1e-6)


def test_cold_continuation_is_deterministic_and_follows_the_fed_state():
  """At temperature -> 0 every sample is the dominant component's mean after the prefix."""
  params = _random_params()
  rows = jnp.asarray(np.stack([_rows(3, 6), _rows(4, 6)]))
  lengths = jnp.array([6, 4])
  cold = lambda seed: np.asarray(sketch_rnn.continue_stroke5(
      params, rows, lengths, jax.random.key(seed), num=3, steps=5, temperature=1e-10))
  a, b = cold(0), cold(1)
  assert a.shape == (2, 3, 5, 5)
  np.testing.assert_allclose(a, b, atol=1e-4)
  np.testing.assert_allclose(a[:, 0], a[:, 2], atol=1e-4)
  carry = sketch_rnn.feed(params, sketch_rnn.start_state(params, 2), rows, lengths)
  out = sketch_rnn.mixture_output(params, carry[1])
  k = np.argmax(out.mixture_logits, axis=1)
  np.testing.assert_allclose(a[:, 0, 0, 0], np.asarray(out.mu_x)[np.arange(2), k], atol=1e-3)
  np.testing.assert_allclose(a[:, 0, 0, 1], np.asarray(out.mu_y)[np.arange(2), k], atol=1e-3)
  np.testing.assert_array_equal(a[:, 0, 0, 2:].argmax(-1), np.argmax(out.pen_logits, -1))


def test_prefix_rows_are_the_strokes_offsets_in_model_units():
  strokes = [np.array([[10.0, 20.0], [30.0, 20.0]]), np.array([[5.0, 5.0]])]
  rows = sketch_rnn.prefix_stroke5(strokes, scale_factor=10.0)
  np.testing.assert_allclose(rows, [[1, 2, 1, 0, 0], [2, 0, 0, 1, 0], [-2.5, -1.5, 0, 1, 0]])


@pytest.mark.parametrize("pens, expected", [
    ([[0, 1, 0], [1, 0, 0]], [[11, 12]]),  # lifts at once: a dot
    ([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], [[11, 12], [12, 14], [13, 16]]),
    ([[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[11, 12]]),  # the end row carries no offset
    ([[0, 0, 1], [0, 1, 0]], np.zeros((0, 2))),  # the model ends the drawing
    ([[1, 0, 0], [1, 0, 0]], [[11, 12], [12, 14]]),  # still drawing: cut at T
])
def test_first_stroke_cuts_at_the_first_pen_lift(pens, expected):
  rows = np.concatenate([np.tile([[0.1, 0.2]], (len(pens), 1)), np.float32(pens)], axis=1)
  stroke = sketch_rnn.first_stroke(rows, scale_factor=10.0, origin=np.array([10.0, 10.0]))
  np.testing.assert_allclose(stroke, np.reshape(expected, (-1, 2)), atol=1e-5)
