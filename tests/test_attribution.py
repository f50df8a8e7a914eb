"""Attribution: completeness of IG (raster and vector), occlusion = real deletion, gates."""

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.data import tokenize
from sketchjax.methods import attribution
from sketchjax.models.sketchxainet import SketchXAINet
from sketchjax.sketch.sketch import Sketch

SETTINGS = sr.RasterSettings(size=16, line_width=2.0, edge=0.5, supersample=2)


def _image_score():
  """A fixed smooth non-linear 'model' of a 16x16 image."""
  w1 = jax.random.normal(jax.random.key(0), (256, 8)) * 0.3
  w2 = jax.random.normal(jax.random.key(1), (8,))
  return lambda image: jnp.tanh(image.reshape(-1) @ w1) @ w2


def _strokes():
  strokes = [np.array([[2.0, 3.0], [12.0, 3.5], [13.0, 12.0]]),
             np.array([[3.0, 13.0], [8.0, 7.0]]), np.array([[10.5, 9.5]])]
  return sr.pad_strokes(strokes, 4, 4)


def test_raster_ig_is_complete_and_shapes():
  xy, lens = _strokes()
  n = sr.count_segments(lens)
  out = jax.jit(lambda xy, lens: attribution.raster_attributions(
      _image_score(), xy, lens, SETTINGS, num_segments=n, steps=64))(xy, lens)
  gap = float(out["score"] - out["blank_score"])
  assert abs(gap) > 1e-2
  np.testing.assert_allclose(float(out["sla_ig"].sum()), gap, rtol=2e-2, atol=1e-3)
  np.testing.assert_allclose(float(out["psla_ig"].sum()), gap, rtol=2e-2, atol=1e-3)
  assert out["sla_ig"].shape == (4,) and float(out["sla_ig"][3]) == 0.0
  assert out["psla_ig"].shape == (n,)
  np.testing.assert_array_equal(out["segment_stroke"], [0, 0, 1, 2])
  assert out["point_grad"].shape == (4, 4)
  assert float(out["point_grad"][1, 2:].sum()) == 0.0  # padding points have no heat
  assert float(out["point_grad"][0, :3].sum()) > 0.0
  # occlusion of a stroke = the score drop of drawing the sketch without it
  score = _image_score()
  without_0 = score(sr.soft_rasterize(xy, lens, SETTINGS, stroke_opacity=jnp.array([0., 1, 1, 0])))
  np.testing.assert_allclose(float(out["occlusion"][0]), float(out["score"] - without_0),
                             rtol=1e-4, atol=1e-5)
  # the same drop, packed with the other real strokes of a batch of the sketch twice
  coverage = sr.draw_strokes(xy, lens, SETTINGS, num_segments=n)
  drawn = {"coverage": jnp.stack([coverage, coverage])}
  stroke_len = np.stack([np.asarray(lens)] * 2)
  targets = jnp.zeros(2, jnp.int32)
  drawn_logits = lambda d: jax.vmap(lambda c: score(sr.composite(c))[None])(d["coverage"])
  packed = attribution.packed_occlusion(drawn_logits, drawn,
                                        attribution.deletion_pairs(stroke_len, multiple=4),
                                        targets, num_slots=4, delete=attribution.hide_strokes)
  np.testing.assert_allclose(np.asarray(packed), np.stack([out["occlusion"]] * 2),
                             rtol=1e-4, atol=1e-5)


def _tiny_model_and_sketch():
  model = SketchXAINet(num_classes=5, hidden=16, num_layers=2, num_heads=2, mlp_dim=32,
                       max_strokes=8, dropout=0.0, attention_dropout=0.0)
  sketch = Sketch((np.array([[-0.5, -0.5], [0.5, -0.4]]), np.array([[0.0, 0.0], [0.1, 0.6],
                                                                   [0.3, 0.2]]),
                   np.array([[0.6, 0.6], [0.7, 0.1]])))
  batch = tokenize.tokenize_batch([sketch], [0], tokenize.TokenizerConfig(max_strokes=8))
  batch = {k: jnp.asarray(batch[k]) for k in ("points", "stroke_len", "loc")}
  params = model.init(jax.random.key(0), batch, train=False)["params"]
  return model, params, sketch, jax.tree.map(lambda x: x[0], batch)


def test_vector_ig_complete():
  model, params, _, one = _tiny_model_and_sketch()
  score = lambda logits: logits[2]
  out = jax.jit(lambda s: attribution.vector_attributions(model, params, s, score, steps=64))(one)
  gap = float(out["score"] - out["blank_score"])
  np.testing.assert_allclose(float(out["gate_ig"].sum()), gap, rtol=2e-2, atol=2e-3)
  assert float(jnp.abs(out["gate_ig"][3:]).sum()) == 0.0


def test_packed_occlusion_is_deletion_and_matches_per_slot_occlusion():
  model, params, sketch, _ = _tiny_model_and_sketch()
  config = tokenize.TokenizerConfig(max_strokes=8)
  reduced = Sketch((sketch.strokes[0], sketch.strokes[2]))
  host = tokenize.tokenize_batch([sketch, reduced], [0, 0], config)
  batch = {k: jnp.asarray(host[k]) for k in ("points", "stroke_len", "loc")}
  logits = lambda b: model.apply({"params": params}, b, train=False)[0]
  pairs = attribution.deletion_pairs(host["stroke_len"], multiple=8)
  assert pairs.shape == (8, 2) and (pairs[5:] == [0, -1]).all()
  targets = jnp.array([2, 1])
  packed = jax.jit(lambda b, p, t: attribution.packed_occlusion(logits, b, p, t, num_slots=8))(
      batch, pairs, targets)
  assert packed.shape == (2, 8)
  # deleting stroke 1 of sketch 0 = the tokenised sketch drawn without it
  full = logits(batch)
  np.testing.assert_allclose(float(packed[0, 1]), float(full[0, 2] - full[1, 2]),
                             rtol=1e-4, atol=1e-5)
  for b in range(2):  # the one-pass-per-slot reference
    one = jax.tree.map(lambda x: x[b], batch)
    score = lambda keep: logits(jax.tree.map(
        lambda x: x[None], attribution.delete_strokes(one, keep)))[0, targets[b]]
    reference = attribution.occlusion(score, one["stroke_len"] > 0)
    np.testing.assert_allclose(np.asarray(packed[b]), np.asarray(reference), rtol=1e-4, atol=1e-5)


def test_gate_zero_is_an_empty_slot():
  model, params, _, one = _tiny_model_and_sketch()
  gate = jnp.array([1.0, 0.0, 1, 1, 1, 1, 1, 1])
  gated = attribution.gated_logits(model, params, one, gate)
  emptied = {"points": one["points"][None], "stroke_len": one["stroke_len"].at[1].set(0)[None],
             "loc": one["loc"].at[1].set(0.0)[None]}
  np.testing.assert_allclose(gated, model.apply({"params": params}, emptied, train=False)[0][0],
                             rtol=1e-5, atol=1e-5)
  full = attribution.gated_logits(model, params, one, jnp.ones(8))
  plain = model.apply({"params": params}, jax.tree.map(lambda x: x[None], one), train=False)[0][0]
  np.testing.assert_allclose(full, plain, rtol=1e-5, atol=1e-5)


def test_delete_strokes_compacts_in_order():
  _, _, _, one = _tiny_model_and_sketch()
  out = attribution.delete_strokes(one, jnp.array([1, 0, 1, 0, 0, 0, 0, 0]))
  np.testing.assert_array_equal(out["stroke_len"], [2, 2, 0, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(out["loc"][:2], np.asarray(one["loc"])[[0, 2]])
  np.testing.assert_allclose(out["points"][1], one["points"][2])
  assert float(jnp.abs(out["points"][2:]).sum()) == 0.0
