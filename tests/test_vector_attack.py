"""Stroke attacks on SketchXAINet: the in-JAX tokens equal the host path, removal orders cut
strokes from their ends, and every flip the attacks report is a flip of the model on the
drawing without the removed ink (or with the moved points), read as the classifier reads it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.data import tokenize, vector_tokens
from sketchjax.methods import raster_attack, vector_attack
from sketchjax.models import sketchxainet
from sketchjax.sketch import normalize
from sketchjax.sketch.sketch import Sketch
from sketchjax.tasks import stroke_attack_vector

TOKENIZER = tokenize.TokenizerConfig(stroke_buckets=(8, 16), point_buckets=(16, 32))
RADII = (2.0, 24.0)


def _drawings():
  """Two drawings in 0..255 canvas units, one with a dot."""
  rng = np.random.default_rng(3)
  walk = lambda n, at: np.clip(at + np.cumsum(rng.normal(0, 18, (n, 2)), 0), 0, 255)
  return [[walk(n, at) for n, at in zip(lengths, (60, 190, 120, 90, 150))]
          for lengths in ((6, 1, 8, 3), (4, 9, 5, 2, 7))]


def _host_logits(model, params, strokes):
  """Logits of the drawing as the classify task reads it: normalised and tokenised on the host."""
  sketch = normalize.normalize_sketchxai(Sketch(tuple(np.asarray(s) for s in strokes)))
  batch = tokenize.tokenize_batch([sketch], [0], TOKENIZER)
  return np.asarray(model.apply({"params": params}, batch, train=False, logits_only=True)[0][0])


@pytest.fixture(scope="module")
def attacked():
  """A tiny random SketchXAINet (head scaled up so that classes are far apart), and every
  attack on the two drawings, batched with lax.map as the task runs them."""
  model = sketchxainet.SketchXAINet(5, hidden=16, num_layers=1, num_heads=2, mlp_dim=32,
                                    mask_padding=True)
  drawings = _drawings()
  xy, lens, num_segments = stroke_attack_vector.pad(drawings, TOKENIZER)
  batch = tokenize.tokenize_batch(
      [normalize.normalize_sketchxai(Sketch(tuple(d))) for d in drawings], [0, 0], TOKENIZER)
  params = model.init(jax.random.key(0), batch, train=False)["params"]
  params = {**params, "head": {**params["head"], "kernel": params["head"]["kernel"] * 30.0}}
  settings = raster_attack.AttackSettings(ig_steps=4, chunk=4, pgd_steps=6)
  one = lambda args: vector_attack.attack_sketch(
      model, params, *args, jnp.asarray(RADII), jax.random.key(1), settings,
      num_segments=num_segments, dot_length=16.0)
  out = jax.jit(lambda *a: jax.lax.map(one, a, batch_size=2))(xy, lens, jnp.array([0, 1]))
  return model, params, drawings, xy, lens, jax.tree.map(np.asarray, out)


def test_tokens_equal_the_host_path():
  drawings = _drawings()
  xy, lens, _ = stroke_attack_vector.pad(drawings, TOKENIZER)
  # all points; then stroke 1 dropped and stroke 2 cut to 3 points (stroke 3 moves up)
  for kept, reduced in ((None, drawings[0]),
                        (np.array([6, 0, 3, 3]), [drawings[0][0], drawings[0][2][:3],
                                                  drawings[0][3]])):
    kept = None if kept is None else np.pad(kept, (0, lens.shape[1] - 4))
    got = vector_tokens.tokens(jnp.asarray(xy[0]), jnp.asarray(lens[0]),
                               None if kept is None else jnp.asarray(kept))
    want = tokenize.tokenize_batch([normalize.normalize_sketchxai(Sketch(tuple(reduced)))],
                                   [0], TOKENIZER)
    points = want["points"][0]
    np.testing.assert_array_equal(got["stroke_len"], want["stroke_len"][0])
    np.testing.assert_allclose(got["loc"], want["loc"][0], atol=1e-6)
    np.testing.assert_allclose(got["points"][:, :points.shape[1]], points, atol=1e-6)
    assert not np.asarray(got["points"][:, points.shape[1]:]).any()


def test_tail_order_cuts_strokes_from_their_end():
  lens = jnp.array([3, 1, 4])  # segments: stroke 0 g0 g1, stroke 1 a dot, stroke 2 g0 g1 g2
  valid = vector_attack.segment_grid(lens, 4)
  index, in_range = vector_attack.pack_index(valid, 8)
  cut = jnp.array([[0.0, 2.0, 9.0], [1.0, 9.0, 9.0], [-1.0, 5.0, 0.0]])  # invalid cells: 9
  # priorities (running max along each stroke): s0 [0, 2], s1 [1], s2 [-1, 5, 5]
  order = vector_attack.tail_order(cut, valid, index, in_range)
  np.testing.assert_array_equal(order, [5, 4, 1, 2, 0, 3, 6, 7])  # packed: s0g0 = 0 ... s2g2 = 5
  kept = lambda removed: np.asarray(vector_attack.kept_points(
      ~np.isin(np.arange(8), order[:removed]), index, in_range, lens, 4))
  np.testing.assert_array_equal(kept(0), [3, 1, 4])
  np.testing.assert_array_equal(kept(2), [3, 1, 2])
  np.testing.assert_array_equal(kept(4), [2, 0, 2])
  np.testing.assert_array_equal(kept(6), [0, 0, 0])
  drawing_order = jnp.broadcast_to(-jnp.arange(3.0)[:, None], (3, 3))
  np.testing.assert_array_equal(vector_attack.tail_order(drawing_order, valid, index, in_range),
                                [1, 0, 2, 5, 4, 3, 6, 7])
  np.testing.assert_allclose(vector_attack.tail_sums(jnp.ones((3, 3)), valid),
                             [[2, 1, 0], [1, 0, 0], [3, 2, 1]])


def test_flips_are_real(attacked):
  model, params, drawings, xy, lens, out = attacked
  flips = 0
  for b, drawing in enumerate(drawings):
    n, prediction = len(drawing), out["prediction"][b]
    assert np.argmax(_host_logits(model, params, drawing)) == prediction
    for o in range(len(vector_attack.VECTOR_STROKE_ORDERS)):
      removed = out["strokes/removed_mask"][b, o]
      assert removed.sum() == out["strokes/removed"][b, o] < n
      ink = out["stroke_ink"][b]
      np.testing.assert_allclose(out["strokes/cost_share"][b, o], ink[removed].sum() / ink.sum(),
                                 rtol=1e-5)
      if out["strokes/success"][b, o]:
        flips += 1
        left = [s for k, s in enumerate(drawing) if not removed[k]]
        host = np.argmax(_host_logits(model, params, left))
        assert host == out["strokes/prediction"][b, o] != prediction
    stroke_of = out["segment_stroke"][b]
    for o in range(len(vector_attack.VECTOR_SEGMENT_ORDERS)):
      if not out["segments/success"][b, o]:
        continue
      flips += 1
      removed = out["segments/removed_mask"][b, o]
      left = []
      for k, stroke in enumerate(drawing):  # removed segments are a tail of their stroke
        gone = removed[stroke_of == k]
        cut = int(np.argmax(gone)) if gone.any() else len(gone)
        assert gone[cut:].all()
        if cut > 0:
          left.append(stroke[:cut + 1])
      host = np.argmax(_host_logits(model, params, left))
      assert host == out["segments/prediction"][b, o] != prediction
    for r, radius in enumerate(RADII):
      delta = out["pgd/delta"][b, r]
      shift = np.linalg.norm(delta, axis=-1)
      real = np.arange(delta.shape[1])[None, :] < lens[b][:, None]
      assert shift.max() <= radius * (1 + 1e-5) and not shift[~real].any()
      np.testing.assert_allclose(out["pgd/max_shift"][b, r], shift.max(), rtol=1e-5)
      moved = [xy[b, k, :len(s)] + delta[k, :len(s)] for k, s in enumerate(drawing)]
      host = np.argmax(_host_logits(model, params, moved))
      assert host == out["pgd/prediction"][b, r]
      assert out["pgd/success"][b, r] == (host != prediction)
      flips += int(out["pgd/success"][b, r])
  assert flips > 0


def test_occlusion_is_the_exact_deletion(attacked):
  model, params, drawings, _, _, out = attacked
  drawing, prediction = drawings[1], out["prediction"][1]
  full = _host_logits(model, params, drawing)[prediction]
  without = [_host_logits(model, params, drawing[:k] + drawing[k + 1:])[prediction]
             for k in range(len(drawing))]
  np.testing.assert_allclose(out["occlusion"][1][:len(drawing)], full - np.array(without),
                             rtol=1e-3, atol=1e-3)
  assert not out["occlusion"][1][len(drawing):].any()
