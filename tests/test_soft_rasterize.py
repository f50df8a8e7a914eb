"""Soft rasteriser: the official 28x28 bitmaps of real drawings, doodleNet on our renders,
gradients against finite differences, opacities and compositing."""

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.data import soft_rasterize as sr
from sketchjax.data.formats.ndjson import read_ndjson
from sketchjax.models.doodlenet import load_doodlenet

# Categories whose bitmap rows 0-19 are the official renders of ndjson rows 0-19 (SOURCES.md).
OFFICIAL_CATEGORIES = ("airplane", "alarm clock", "apple", "banana", "bicycle", "bird", "book",
                       "bowtie", "cat", "diamond", "dog", "eye", "fish", "flower", "house",
                       "lollipop", "rainbow", "train")
ROWS = 20
SMALL = sr.RasterSettings(size=12, line_width=2.0, edge=0.5, supersample=2)


QUICKDRAW = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "quickdraw"


@pytest.fixture(scope="module")
def official_pairs():
  """(our renders float32[360, 28, 28], official bitmaps / 255, category of each row)."""
  if not QUICKDRAW.exists():
    pytest.skip(f"real data not found at {QUICKDRAW}: these tests need the project's "
                "../shared folder next to the checkout")
  quickdraw_dir = QUICKDRAW
  sketches, bitmaps, categories = [], [], []
  for category in OFFICIAL_CATEGORIES:
    drawings = list(read_ndjson(quickdraw_dir / "simplified" / f"{category}.ndjson"))[:ROWS]
    sketches += [d.sketch.strokes for d in drawings]
    bitmaps.append(np.load(quickdraw_dir / "bitmap" / f"{category}.npy")[:ROWS])
    categories += [category] * ROWS
  official = np.concatenate(bitmaps).reshape(-1, 28, 28).astype(np.float32) / 255
  return sr.render_official(sketches), official, categories


def test_matches_official_bitmaps(official_pairs):
  ours, official, _ = official_pairs
  mae = np.abs(ours - official).mean()
  print(f"mean absolute error vs {len(ours)} official bitmaps: {mae * 255:.3f} / 255 "
        f"({100 * mae:.2f}% of full scale)")
  assert mae < 0.01  # measured 0.28%; the goal is < 2%
  assert np.abs(ours - official).max() < 0.15  # no missing or extra stroke anywhere


def test_doodlenet_top1_on_our_renders(official_pairs, pretrained_dir):
  ours, official, categories = official_pairs
  model, variables, names = load_doodlenet(pretrained_dir / "doodlenet")
  labels = np.array([names.index(c) for c in categories])
  predict = jax.jit(lambda x: model.apply(variables, x[..., None])[0].argmax(-1))
  top1_ours = float(np.mean(np.asarray(predict(ours)) == labels))
  top1_official = float(np.mean(np.asarray(predict(official)) == labels))
  print(f"doodleNet top-1: ours {top1_ours:.4f}, official {top1_official:.4f}")
  assert abs(top1_ours - top1_official) <= 0.02


def _two_strokes():
  strokes = [np.array([[2.0, 2.5], [9.0, 3.0], [8.5, 9.0]]), np.array([[3.5, 8.5]])]
  return sr.pad_strokes(strokes, 3, 4)  # one empty slot, padded points


def test_gradients_match_finite_differences():
  xy, lens = _two_strokes()
  weights = jax.random.uniform(jax.random.key(0), (12, 12))
  num_segments = sr.count_segments(lens)

  @jax.jit
  def f(xy, stroke_opacity, segment_opacity):
    image = sr.soft_rasterize(xy, lens, SMALL, stroke_opacity=stroke_opacity,
                              segment_opacity=segment_opacity, num_segments=num_segments)
    return jnp.sum(image * weights)

  args = (jnp.asarray(xy), jnp.full(3, 0.7), jnp.full(num_segments, 0.6))
  grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*args)
  for i, grad in enumerate(grads):
    direction = jax.random.normal(jax.random.key(i + 1), args[i].shape)
    eps = 1e-2
    plus = [a + eps * direction if j == i else a for j, a in enumerate(args)]
    minus = [a - eps * direction if j == i else a for j, a in enumerate(args)]
    numeric = (f(*plus) - f(*minus)) / (2 * eps)
    analytic = jnp.sum(grad * direction)
    assert abs(numeric - analytic) <= 2e-2 * abs(analytic) + 1e-3, (i, numeric, analytic)
  assert float(jnp.abs(grads[0][0, 3:]).sum()) == 0.0  # padded points get no gradient


def test_opacities_and_empty_slots():
  xy, lens = _two_strokes()
  image = sr.soft_rasterize(xy, lens, SMALL)
  assert image.shape == (12, 12) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
  assert float(image[2, 5]) > 0.9 and float(image[8, 3]) > 0.9  # a line and a dot
  assert float(image[10, 10]) == 0.0
  ones = sr.soft_rasterize(xy, lens, SMALL, stroke_opacity=jnp.ones(3),
                           segment_opacity=jnp.ones(sr.count_segments(lens)),
                           num_segments=sr.count_segments(lens))
  np.testing.assert_allclose(ones, image, atol=1e-5)
  blank = sr.soft_rasterize(xy, lens, SMALL, stroke_opacity=jnp.zeros(3))
  assert float(jnp.abs(blank).max()) == 0.0
  only_dot = sr.soft_rasterize(xy, lens, SMALL, stroke_opacity=jnp.array([0.0, 1.0, 1.0]))
  assert float(only_dot[2, 5]) == 0.0 and float(only_dot[8, 3]) > 0.9


def test_overlapping_strokes_composite_over():
  stroke = np.array([[2.2, 6.3], [9.7, 6.3]])
  once = sr.soft_rasterize(*sr.pad_strokes([stroke], 1, 2), SMALL)
  twice = sr.soft_rasterize(*sr.pad_strokes([stroke, stroke], 2, 2), SMALL)
  np.testing.assert_allclose(twice, 1 - (1 - once) ** 2, atol=1e-5)


def test_official_transform():
  pixels = sr.official_pixels([np.array([[0.0, 0.0], [255.0, 127.0]])])[0]
  scale = 28 / 304
  np.testing.assert_allclose(pixels[0], [(0.5 + 24) * scale, (64.5 + 24) * scale])
  np.testing.assert_allclose(pixels[1], [(255.5 + 24) * scale, (191.5 + 24) * scale])


@pytest.mark.parametrize("tile", [1, 4, 5, 12])
def test_tile_culling_draws_the_same_image_and_gradients(tile):
  """Drawing each segment only on the tiles it reaches (any tile size, also one that does
  not divide the image) equals drawing it on every tile, values and gradients."""
  settings = dataclasses.replace(SMALL, tile=tile)
  strokes = [np.array([[2.0, 2.5], [9.0, 3.0], [8.5, 9.0]]), np.array([[3.5, 8.5]]),
             np.array([[0.2, 11.5], [11.8, 0.3], [11.0, 11.0], [6.0, 6.2]])]
  xy, lens = sr.pad_strokes(strokes, 4, 5)
  num_segments = sr.count_segments(lens)
  num_pairs = sr.tile_pair_budget(xy, lens, settings)
  assert num_pairs < num_segments * sr._tiles_per_side(settings)**2 or tile == 12

  @functools.partial(jax.jit, static_argnums=2)  # one compile each, not op-by-op
  def draw(xy, opacity, pairs):
    return sr.soft_rasterize(xy, lens, settings, segment_opacity=opacity,
                             num_segments=num_segments, num_pairs=pairs)

  args = (jnp.asarray(xy), jnp.full(num_segments, 0.8))
  weights = jax.random.uniform(jax.random.key(0), (12, 12))
  for pairs in (num_pairs, None):
    assert draw(*args, pairs).shape == (12, 12)
  np.testing.assert_allclose(draw(*args, num_pairs), draw(*args, None), atol=1e-6)
  np.testing.assert_allclose(draw(*args, num_pairs), sr.soft_rasterize(
      xy, lens, dataclasses.replace(SMALL, tile=12), segment_opacity=args[1]), atol=1e-6)
  grad = lambda pairs: jax.grad(lambda x, o: jnp.sum(draw(x, o, pairs) * weights),
                                argnums=(0, 1))(*args)
  for culled, full in zip(grad(num_pairs), grad(None)):
    np.testing.assert_allclose(culled, full, rtol=1e-5, atol=1e-6)


def test_too_few_pair_rows_give_nan_not_a_partial_image():
  xy, lens = _two_strokes()
  settings = dataclasses.replace(SMALL, tile=2)
  needed = sr.tile_pair_budget(xy, lens, settings)
  assert np.isfinite(np.asarray(sr.soft_rasterize(xy, lens, settings, num_pairs=needed))).all()
  assert np.isnan(np.asarray(sr.soft_rasterize(xy, lens, settings, num_pairs=2))).all()


def test_draw_batch_packs_the_batch_and_equals_each_sketch_drawn_alone():
  sketches = [[np.array([[2.0, 2.5], [9.0, 3.0], [8.5, 9.0]]), np.array([[3.5, 8.5]])],
              [np.array([[0.2, 11.5], [11.8, 0.3], [11.0, 11.0]])],
              [np.array([[6.0, 6.0], [6.5, 6.0]]), np.array([[1.0, 1.0], [2.0, 9.0]]),
               np.array([[10.0, 2.0]])]]
  xy, lens, num_segments = sr.pad_batch(sketches)
  total = sr.tile_pair_budget(xy, lens, SMALL, batch_total=True)
  packed = sr.draw_batch(xy, lens, SMALL, num_segments=num_segments, num_pairs=total)
  assert packed.shape == (3, lens.shape[1], 12, 12)
  for b in range(3):
    np.testing.assert_allclose(packed[b], sr.draw_strokes(xy[b], lens[b], SMALL,
                                                          num_segments=num_segments), atol=1e-6)
