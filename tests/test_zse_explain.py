"""ZSE-SBIR explanations: CA and kernel correspondences against hand-worked cases and numpy,
patch replacement exact on constructed images, the explainer on a small random model
(`--config.mode=explain` end to end: tests/test_zse_training.py, on its trained model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.methods import zse_explain
from sketchjax.models import zse_attention as za
from sketchjax.models import zse_sbir


def test_cell_centres_by_hand():
  xy = np.asarray(zse_explain.cell_centres(jnp.array([0, 1, 4, 15]), 4, 32))
  np.testing.assert_array_equal(xy, [[16, 16], [48, 16], [16, 48], [112, 112]])


def test_identical_tokens_attend_to_themselves():
  # q = k = well separated tokens: each query's softmax peaks on its own key.
  rng = np.random.default_rng(0)
  n, heads, d = 6, 2, 8
  tokens = jnp.asarray(4 * rng.normal(size=(1, 1 + n, heads, d)), jnp.float32)
  probs, _ = za.attend(tokens, tokens, tokens)
  kept = jnp.array([[3, 7, 8, 9, 12, 14]], jnp.int32)  # grid index of each token row
  out = zse_explain.cross_attention_matches(probs, kept, kept)
  np.testing.assert_array_equal(out["query"], kept)
  np.testing.assert_array_equal(out["key"], kept)  # each token matches itself
  mean = np.asarray(probs)[0, :, 1:, 1:].mean(0)
  np.testing.assert_allclose(out["weight"][0], np.diag(mean), rtol=1e-6)


def test_cross_attention_matches_ignore_ret_and_map_rows_to_grid():
  # Query 0 puts most weight on [Ret], then on key row 2; query 1 on key row 0.
  attention = np.zeros((1, 1, 3, 4), np.float32)
  attention[0, 0, 1] = [0.7, 0.05, 0.1, 0.15]
  attention[0, 0, 2] = [0.0, 0.6, 0.3, 0.1]
  out = zse_explain.cross_attention_matches(jnp.asarray(attention), jnp.array([[5, 9]]),
                                            jnp.array([[2, 4, 6]]))
  np.testing.assert_array_equal(out["key"], [[6, 2]])
  np.testing.assert_allclose(out["weight"], [[0.15, 0.6]])


def test_kernel_matches_against_numpy():
  kernel = np.random.default_rng(1).uniform(-1, 1, (3, 4, 5)).astype(np.float32)
  kernel[0, 1, 2] = kernel[0, 3, 0] = 2.0  # a tie: the lower sketch anchor first
  out = zse_explain.kernel_matches(jnp.asarray(kernel), 6)
  np.testing.assert_array_equal(out["row_best"], kernel.argmax(-1))
  for b in range(3):
    flat = np.argsort(-kernel[b].reshape(-1), kind="stable")[:6]
    np.testing.assert_array_equal(out["sketch"][b], flat // 5)
    np.testing.assert_array_equal(out["photo"][b], flat % 5)
    np.testing.assert_allclose(out["value"][b], kernel[b].reshape(-1)[flat])
  assert (out["sketch"][0, 0], out["photo"][0, 0], out["sketch"][0, 1]) == (1, 2, 3)
  assert zse_explain.kernel_matches(jnp.asarray(kernel), 100)["value"].shape == (3, 20)


def _cells_image(rng, grid, cell):
  return jnp.asarray(rng.uniform(-1, 1, (1, grid * cell, grid * cell, 3)), jnp.float32)


def test_cells_round_trip():
  image = _cells_image(np.random.default_rng(2), 4, 3)
  cells = zse_explain.to_cells(image, 4)
  assert cells.shape == (1, 16, 3, 3, 3)
  np.testing.assert_array_equal(cells[0, 6], image[0, 3:6, 6:9])  # row 1, col 2
  np.testing.assert_array_equal(zse_explain.from_cells(cells, 4), image)


def test_patch_replacement_reconstructs_permuted_photo():
  # The sketch is the photo with its cells permuted, and so are its tokens: every sketch
  # cell is filled with the photo cell it came from, which rebuilds the sketch exactly.
  rng, grid, cell, dim = np.random.default_rng(3), 4, 5, 16
  photo = _cells_image(rng, grid, cell)
  perm = rng.permutation(grid * grid)
  sketch = zse_explain.from_cells(zse_explain.to_cells(photo, grid)[:, perm], grid)
  photo_tokens = jnp.asarray(rng.normal(size=(1, 1 + grid * grid, dim)), jnp.float32)
  sketch_tokens = jnp.concatenate([photo_tokens[:, :1], photo_tokens[:, 1:][:, perm]], 1)
  similarity = zse_explain.token_cosine(sketch_tokens, photo_tokens)
  kept = jnp.arange(grid * grid, dtype=jnp.int32)[None]
  synthesis, source = zse_explain.patch_replacement(sketch, photo, similarity, kept, kept, grid)
  np.testing.assert_array_equal(source[0], perm)
  np.testing.assert_array_equal(synthesis, sketch)


def test_patch_replacement_with_token_selection():
  # Sketch keeps tokens at cells 0 and 3 of a 2 x 2 grid, the photo cells 1 and 2; the
  # sketch cells 1 and 2 were dropped and keep the sketch's pixels.
  rng = np.random.default_rng(4)
  sketch, photo = _cells_image(rng, 2, 2), _cells_image(rng, 2, 2)
  similarity = jnp.array([[[0.1, 0.9], [0.8, 0.2]]])  # cell 0 <- photo row 1, 3 <- row 0
  synthesis, source = zse_explain.patch_replacement(
      sketch, photo, similarity, jnp.array([[0, 3]]), jnp.array([[1, 2]]), 2)
  np.testing.assert_array_equal(source, [[2, 1]])
  s, p, out = (np.asarray(zse_explain.to_cells(x, 2))[0] for x in (sketch, photo, synthesis))
  np.testing.assert_array_equal(out, np.stack([p[2], s[1], s[2], p[1]]))


def test_central_cells():
  assert np.flatnonzero(zse_explain.central_cells(4)).tolist() == [5, 6, 9, 10]
  assert zse_explain.central_cells(14).sum() == 49


def test_ink_cells():
  sketch = np.ones((1, 8, 8, 3), np.float32)
  sketch[0, 5, 1] = -1  # one black pixel in cell (1, 0) of a 2 x 2 grid
  np.testing.assert_array_equal(zse_explain.ink_cells(sketch, 2), [[False, False, True, False]])


def test_pair_statistics_by_hand():
  # 2 x 2 grid: ink in sketch cells 0 and 3; the central block of a 2 x 2 grid is cell 0.
  sketch = np.ones((1, 4, 4, 3), np.float32)
  sketch[0, 0, 0] = sketch[0, 3, 3] = -1
  cells = np.array([[0, 1, 2, 3]])
  explanation = {"ca_sketch_query": cells, "ca_sketch_key": np.array([[0, 0, 1, 3]]),
                 "ca_sketch_weight": np.array([[0.4, 0.3, 0.2, 0.1]]),
                 "ca_photo_query": cells, "ca_photo_key": np.array([[0, 2, 2, 3]]),
                 "synthesis_source": cells, "sketch_kept": cells}
  stats = zse_explain.pair_statistics(explanation, sketch, 2, lines=2)
  expected = {"ca_sketch_ink": 0.5, "ca_photo_central": 1.0, "ca_reverse_ink": 0.5,
              "ink_share": 0.5, "central_share": 0.25, "ca_mutual": 0.75, "ca_distinct": 0.75,
              "ca_weight": 0.35, "synthesis_central": 0.25, "synthesis_ink_central": 0.5,
              "synthesis_blank_central": 0.0}
  assert set(stats) == set(expected)
  for key, value in expected.items():
    np.testing.assert_allclose(stats[key], [value], err_msg=key)


@pytest.fixture(scope="module")
def small_model():
  model = zse_sbir.zse_small(image_size=64, dropout=0.0)
  return model, zse_sbir.init_variables(model, jax.random.key(0))["params"]


@pytest.mark.parametrize("similarity", zse_explain.SIMILARITIES)
def test_explainer_shapes_and_scores(small_model, similarity):
  model, params = small_model
  rng = np.random.default_rng(5)
  sketches = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
  photos = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
  out = zse_explain.explainer(model, top_n=5, similarity=similarity)(params, sketches, photos)
  tg = zse_explain.token_grid(model)
  assert (tg.grid, tg.cell, tg.anchor_cell, tg.anchors_spatial) == (4, 16, 32, False)
  n = 16
  for key, shape in {"logit": (2,), "score": (2,), "ret_cosine": (2,), "sketch_kept": (2, n),
                     "ca_sketch_key": (2, n), "ca_photo_weight": (2, n), "kernel": (2, 4, 4),
                     "kernel_value": (2, 5), "kernel_row_best": (2, 4),
                     "sketch_anchor_xy": (2, 4, 2), "synthesis": (2, 64, 64, 3),
                     "synthesis_source": (2, n)}.items():
    assert out[key].shape == shape, key
  logits, aux = model.apply({"params": params}, sketches, photos)
  np.testing.assert_allclose(out["logit"], logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["kernel"], aux["kernel"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out["sketch_anchor_xy"])[0],
                             [[16, 16], [48, 16], [16, 48], [48, 48]])
  mean = np.asarray(aux["ca_attention_sketch"])[:, :, 1:, 1:].mean(1)
  np.testing.assert_array_equal(out["ca_sketch_key"], mean.argmax(-1))


def test_explainer_same_image_replaces_each_patch_by_itself(small_model):
  # One image as both sketch and photo (the conv stem on both, as the code): the SA tokens
  # are equal, so each cell's most similar photo token is its own and the synthesis is the
  # image itself.
  model, params = small_model
  image = jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (1, 64, 64, 3)), jnp.float32)
  out = zse_explain.explainer(model)(params, image, image)
  np.testing.assert_array_equal(out["synthesis_source"][0], np.arange(16))
  np.testing.assert_array_equal(out["synthesis"], image)
  np.testing.assert_allclose(out["ret_cosine"], [1.0], rtol=1e-5)


def test_explainer_rejects_unknown_similarity(small_model):
  with pytest.raises(ValueError, match="similarity"):
    zse_explain.explainer(small_model[0], similarity="dot")
