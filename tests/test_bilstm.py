"""Tests of the stroke shape encoder (stacked BiLSTM with lengths)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models.bilstm import StrokeShapeEncoder, reduce_by_stroke

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


def test_strokes_packed_back_to_back_in_rows_equal_one_stroke_a_row(encoder_and_params):
  model, params = encoder_and_params
  lengths = [3, 1, 5, 2, 4]
  points, lens = _random_strokes(np.random.default_rng(1), lengths, 5)
  expected = model.apply(params, points, lens)
  rows = np.zeros((2, 9, 4), np.float32)  # row 0: strokes 0, 2, 1; row 1: 4, 3 and padding
  ids = np.full((2, 9), -1, np.int32)
  layout = {0: [0, 2, 1], 1: [4, 3]}
  for r, strokes in layout.items():
    t = 0
    for k in strokes:
      rows[r, t:t + lengths[k]] = np.asarray(points[k, :lengths[k]])
      ids[r, t:t + lengths[k]] = k
      t += lengths[k]
  rows[1, 6:] = 7.0  # junk in padding must not matter
  outputs = model.apply(params, jnp.asarray(rows), jnp.asarray(ids),
                        method=StrokeShapeEncoder.point_outputs)
  packed = reduce_by_stroke(outputs, jnp.asarray(ids), 5)
  np.testing.assert_allclose(packed, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(outputs[1, 6:], 0.0)


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


def _loop_computations(hlo: str) -> tuple[dict[str, str], set[str]]:
  """(computation name -> text, names reachable from while-loop bodies) of HLO text."""
  blocks, name = {}, None
  for line in hlo.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \(", line)
    if header and line.rstrip().endswith("{"):
      name = header.group(1)
      blocks[name] = ""
    elif name is not None:
      blocks[name] += line + "\n"
  frontier = {b for text in blocks.values() for b in re.findall(r"body=%?([\w.\-]+)", text)}
  reached = set()
  while frontier:
    reached |= frontier
    frontier = {c for b in frontier for c in re.findall(
        r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", blocks.get(b, ""))} - reached
  return blocks, reached


@pytest.mark.parametrize("shards", [1, 8])
def test_sharded_rows_sum_the_weight_gradients_once_after_the_scan(shards):
  # 16 rows over 8 devices: with one weight copy a shard the gradient all-reduce is
  # outside the time loop; with shards=1 SPMD all-reduces at every step (the test of
  # the test). Outputs and gradients are the same either way.
  from sketchjax.models.bilstm import BiLSTMLayer
  from sketchjax.training import mesh as mesh_lib
  mesh = mesh_lib.make_mesh()  # ('data',) over the 8 simulated devices
  layer = BiLSTMLayer(4)
  x = jax.random.normal(jax.random.key(0), (6, 16, 3))
  ids = jnp.broadcast_to(jnp.arange(16), (6, 16))
  params = layer.init(jax.random.key(1), x, ids)
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  x, ids = jax.device_put(x, rows), jax.device_put(ids, rows)
  grad = jax.jit(jax.grad(lambda p, x, ids, s: (layer.apply(p, x, ids, s) ** 2).sum()),
                 static_argnums=3)
  hlo = grad.lower(params, x, ids, shards).compile().as_text()
  blocks, in_loops = _loop_computations(hlo)
  assert in_loops, "no while loop in the compiled gradient"
  reduced_in_loop = any("all-reduce(" in blocks[name] for name in in_loops if name in blocks)
  assert reduced_in_loop == (shards == 1)
  expected = jax.grad(lambda p: (layer.apply(p, x, ids) ** 2).sum())(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grad(params, x, ids, shards), expected)
