"""Stroke attacks and noisy-stroke filtering: hand-built cases with known answers, the PGD budget,
orders, and the batched suite equal to one sketch at a time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.data import soft_rasterize as sr
from sketchjax.methods import noisy_strokes, raster_attack, stroke_attack

SETTINGS = sr.RasterSettings(size=16, line_width=2.0, edge=0.5, supersample=2)


def _linear_keep(weights, threshold):
  """Two classes: class 0 scores keep @ weights, class 1 the constant threshold."""
  weights = jnp.asarray(weights, jnp.float32)
  return lambda keep: jnp.stack([keep @ weights, jnp.float32(threshold)])


def test_removal_attack_stops_at_the_first_flip():
  logits = _linear_keep([0.4, 0.3, 0.2, 0.1, 0.0], 0.5)  # slot 4 is padding
  present = jnp.array([True, True, True, True, False])
  cost = jnp.array([1.0, 2.0, 3.0, 4.0, 9.0])
  out = stroke_attack.removal_attack(logits, jnp.array([0, 1, 2, 3, 4]), present, cost,
                                     jnp.int32(0), chunk=2)
  # 1.0 -> 0.6 (still class 0) -> 0.3 < 0.5: flips after removing strokes 0 and 1
  assert bool(out["success"]) and int(out["removed"]) == 2 and int(out["prediction"]) == 1
  np.testing.assert_array_equal(out["removed_mask"], [True, True, False, False, False])
  np.testing.assert_allclose(float(out["cost_share"]), 3.0 / 10.0, rtol=1e-6)
  # drawing the small strokes first needs three of them (1.0 -> 0.9 -> 0.7 -> 0.4)
  out = stroke_attack.removal_attack(logits, jnp.array([3, 2, 1, 0, 4]), present, cost,
                                     jnp.int32(0), chunk=3)
  assert int(out["removed"]) == 3
  np.testing.assert_allclose(float(out["cost_share"]), 9.0 / 10.0, rtol=1e-6)


def test_removal_attack_keeps_one_unit():
  logits = _linear_keep([1.0, 0.0, 0.0], 0.5)  # only removing stroke 0 (of 3) flips
  present = jnp.ones(3, bool)
  out = stroke_attack.removal_attack(logits, jnp.array([1, 2, 0]), present, jnp.ones(3),
                                     jnp.int32(0))
  assert not bool(out["success"]) and int(out["removed"]) == 0
  assert float(out["cost_share"]) == 0.0 and int(out["prediction"]) == 0
  assert not np.asarray(out["removed_mask"]).any()


def test_orders_and_ink_lengths():
  xy, lens = sr.pad_strokes([np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0]]),
                             np.array([[7.0, 7.0]])], 3, 3)
  segments = sr.polyline_segments(jnp.asarray(xy), jnp.asarray(lens), 4)
  np.testing.assert_allclose(stroke_attack.ink_lengths(segments, dot_length=2.0),
                             [5.0, 1.0, 2.0, 0.0])  # a dot counts one line width
  present = jnp.array([True, True, True, False])
  np.testing.assert_array_equal(
      stroke_attack.shortest_first(jnp.array([5.0, 1.0, 1.0, 0.0]), present), [1, 2, 0, 3])
  logits = jnp.array([1.0, 3.0, 2.0])
  assert float(stroke_attack.logit_margin(logits, 1)) == -1.0
  assert float(stroke_attack.logit_margin(logits, 0)) == 2.0


def test_pgd_finds_the_known_displacement_within_budget():
  """Margin = how far point (0, 0) has moved right beyond 3 pixels: radius 5 reaches it, 2 not."""
  xy = jnp.zeros((2, 3, 2)).at[0, :, 0].set(jnp.array([1.0, 4.0, 6.0]))
  lens = jnp.array([3, 0])
  margin = lambda moved: moved[0, 0, 0] - xy[0, 0, 0] - 3.0
  out = stroke_attack.pgd_points(margin, xy, lens, jnp.float32(5.0), steps=10,
                                 step_size=jnp.float32(1.25))
  assert bool(out["success"])
  np.testing.assert_allclose(np.asarray(out["delta"][0, 0]), [3.75, 0.0], atol=1e-6)  # 3 steps
  assert float(out["margin"]) > 0 and not np.asarray(out["delta"][1]).any()  # padding stays
  out = stroke_attack.pgd_points(margin, xy, lens, jnp.float32(2.0), steps=10,
                                 step_size=jnp.float32(1.0))
  assert not bool(out["success"])
  np.testing.assert_allclose(np.asarray(out["delta"][0, 0]), [2.0, 0.0], atol=1e-6)


def _image_logits():
  """A fixed smooth non-linear 3-class 'model' of a 16x16 image."""
  w1 = jax.random.normal(jax.random.key(0), (256, 8)) * 0.3
  w2 = jax.random.normal(jax.random.key(1), (8, 3))
  return lambda image: jnp.tanh(image.reshape(-1) @ w1) @ w2


def _sketches():
  strokes = [[np.array([[2.0, 3.0], [12.0, 3.5], [13.0, 12.0]]),
              np.array([[3.0, 13.0], [8.0, 7.0]]), np.array([[10.5, 9.5]])],
             [np.array([[4.0, 4.0], [11.0, 11.0]]), np.array([[2.0, 12.0], [12.0, 2.0], [13, 6]])],
             [np.array([[8.0, 2.0], [8.0, 14.0]]), np.array([[2.0, 8.0], [14.0, 8.0]]),
              np.array([[3.0, 3.0], [5.0, 5.0]]), np.array([[12.0, 12.0]])]]
  xy, lens, num_segments = sr.pad_batch(strokes)
  return jnp.asarray(xy), jnp.asarray(lens), num_segments


def test_pgd_through_the_rasteriser_respects_the_budget():
  xy, lens, num_segments = _sketches()
  logits = _image_logits()
  radius = 1.5
  grown = sr.RasterSettings(16, SETTINGS.line_width + 2 * radius, SETTINGS.edge, 2)
  pairs = sr.tile_pair_budget(np.asarray(xy[0]), np.asarray(lens[0]), grown)
  target = jnp.argmax(logits(sr.soft_rasterize(xy[0], lens[0], SETTINGS)))
  margin = lambda p: stroke_attack.logit_margin(logits(sr.soft_rasterize(
      p, lens[0], SETTINGS, num_segments=num_segments, num_pairs=pairs)), target)
  out = jax.jit(lambda: stroke_attack.pgd_points(margin, xy[0], lens[0], jnp.float32(radius),
                                                 steps=8, step_size=jnp.float32(0.6)))()
  shift = np.linalg.norm(np.asarray(out["delta"]), axis=-1)
  assert shift.max() <= radius + 1e-5 and shift.max() > 0.5
  assert np.isfinite(float(out["margin"]))
  assert float(out["margin"]) > float(margin(xy[0]))  # ascent raised the margin
  mean, top = stroke_attack.displacement_stats(out["delta"], lens[0])
  assert 0 < float(mean) <= float(top) <= radius + 1e-5


def test_filter_masks_drop_the_same_number():
  attribution = jnp.array([0.5, -0.2, 0.1, -0.3, 0.0])
  lengths = jnp.array([1.0, 5.0, 2.0, 3.0, 0.0])
  present = jnp.array([True, True, True, True, False])
  masks = noisy_strokes.filter_masks(attribution, lengths, present, jax.random.key(0))
  np.testing.assert_array_equal(masks["attribution"], [True, False, True, False, False])
  np.testing.assert_array_equal(masks["shortest"], [False, True, False, True, False])
  assert int(masks["random"].sum()) == 2 and not bool(masks["random"][4])
  # every stroke against the class: the best one stays
  keep = noisy_strokes.filter_masks(-jnp.array([3.0, 1.0, 2.0]), jnp.ones(3), jnp.ones(3, bool),
                                    jax.random.key(0))["attribution"]
  np.testing.assert_array_equal(keep, [False, True, False])


def test_suite_batched_equals_one_by_one():
  xy, lens, num_segments = _sketches()
  pairs = sr.tile_pair_budget(np.asarray(xy), np.asarray(lens), SETTINGS)
  grown = sr.RasterSettings(16, SETTINGS.line_width + 2.0, SETTINGS.edge, 2)
  pgd_pairs = sr.tile_pair_budget(np.asarray(xy), np.asarray(lens), grown)
  attack = raster_attack.AttackSettings(ig_steps=4, chunk=4, pgd_steps=3)
  radii = jnp.array([0.5, 1.0])
  labels = jnp.array([0, 1, 2], jnp.int32)
  keys = jax.random.split(jax.random.key(0), 3)
  one = lambda x, l, y, k: raster_attack.attack_sketch(
      _image_logits(), x, l, y, radii, k, SETTINGS, attack, num_segments=num_segments,
      num_pairs=pairs, pgd_pairs=pgd_pairs)
  # vmapped over the 3 sketches against a scan of the unbatched function, one at a time
  batched, single = (jax.jit(lambda *a: jax.lax.map(lambda b: one(*b), a, batch_size=size))(
      xy, lens, labels, keys) for size in (3, None))
  for name, value in single.items():
    np.testing.assert_allclose(np.asarray(batched[name]), np.asarray(value), rtol=1e-4,
                               atol=1e-5, err_msg=name)
  first = jax.tree.map(lambda v: np.asarray(v[0]), batched)
  # a stroke-removal success removes strokes worth its cost share, and flips
  for o in range(len(raster_attack.STROKE_ORDERS)):
    removed = first["strokes/removed_mask"][o]
    assert removed.sum() == first["strokes/removed"][o]
    share = first["stroke_ink"][removed].sum() / first["stroke_ink"].sum()
    np.testing.assert_allclose(first["strokes/cost_share"][o], share, rtol=1e-5)
    assert first["strokes/success"][o] == (first["strokes/prediction"][o] != first["prediction"])
  assert (first["pgd/max_shift"] <= np.asarray(radii) + 1e-5).all()


def test_bad_attack_settings():
  with pytest.raises(ValueError, match="pgd_steps"):
    raster_attack.AttackSettings(pgd_steps=0)
