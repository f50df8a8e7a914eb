"""Stroke attribution in retrieval (sketchjax/methods/retrieval_attribution.py) and the
retrieval_attribution task end to end on its smoke config."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from sketchjax.data import image_preprocess
from sketchjax.data import soft_rasterize as sr
from sketchjax.data.formats import image_folders
from sketchjax.methods import faithfulness
from sketchjax.methods import retrieval_attribution as ra

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

# A drawing in simplified QuickDraw coordinates: a box, a diagonal, a dot-like tick.
DRAWING = [np.array([[20, 20], [230, 20], [230, 200], [20, 200], [20, 20]], np.float32),
           np.array([[20, 20], [230, 200]], np.float32),
           np.array([[120, 60], [140, 90], [160, 60]], np.float32)]


def _embed(size: int):
  """A fixed smooth embedding of [B, s, s, 3] images: a random projection, tanh, L2 norm."""
  w = jax.random.normal(jax.random.key(0), (size * size * 3, 16)) / size

  def embed(images):
    x = jnp.tanh(images.reshape(images.shape[0], -1) @ w)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  return embed


def _coverage(renderer, strokes):
  xy, lens, num_segments = sr.pad_batch([renderer.pixels(strokes)])
  coverage = sr.draw_strokes(xy[0], lens[0], renderer.settings, num_segments=num_segments)
  return xy[0], lens[0], num_segments, coverage


def test_pil_matrix_is_pils_resize():
  image = np.random.default_rng(0).uniform(0, 255, (96, 96)).astype(np.float32)
  ours = ra.pil_bilinear_matrix(96, 32) @ image @ ra.pil_bilinear_matrix(96, 32).T
  pil = np.asarray(Image.fromarray(image, mode="F").resize((32, 32), Image.Resampling.BILINEAR))
  np.testing.assert_allclose(ours, pil, atol=1e-3)


def test_soft_render_matches_the_pipeline_render():
  """The soft query image is the pipeline's (render_drawing at 256, bilinear to 64,
  x / 127.5 - 1) up to the soft edge: mean |difference| under 2% of the range."""
  renderer = ra.QueryRenderer.pipeline(64, 256, supersample=2)
  *_, coverage = _coverage(renderer, DRAWING)
  soft = np.asarray(renderer.images(sr.composite(coverage)))
  pipeline = image_preprocess.Preprocess("mobilenet", 64)(
      image_folders.render_drawing(DRAWING, 256), "sketch")
  assert soft.shape == pipeline.shape == (64, 64, 3)
  assert np.mean(np.abs(soft - pipeline)) < 0.04  # of a [-1, 1] range
  assert np.abs(soft - pipeline).max() < 0.5
  moved = image_preprocess.Preprocess("mobilenet", 64)(
      image_folders.render_drawing([s + [0, 30] for s in DRAWING], 256), "sketch")
  assert np.mean(np.abs(soft - moved)) > 3 * np.mean(np.abs(soft - pipeline))


def test_prefix_embeddings_are_the_encoder_on_just_those_strokes():
  renderer = ra.QueryRenderer.pipeline(32, 64, supersample=1)
  embed = _embed(32)
  xy, lens, num_segments, coverage = _coverage(renderer, DRAWING)
  present = lens > 0
  order = faithfulness.ranking(jnp.array([0.1, 0.9, -0.3, 0.0]), present)  # 1, 0, 2
  masks = ra.prefix_masks(order, present, jnp.array([1, 2, 3]))
  np.testing.assert_array_equal(masks, [[0, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]])
  got = ra.prefix_embeddings(embed, renderer, coverage, masks)
  for k, kept in enumerate(([1], [0, 1], [0, 1, 2])):
    only = np.where(np.isin(np.arange(len(lens)), kept), lens, 0)
    image = sr.soft_rasterize(xy, jnp.asarray(only), renderer.settings,
                              num_segments=num_segments)
    np.testing.assert_allclose(got[k], embed(renderer.images(image)[None])[0], atol=1e-5)


def test_stroke_lengths_by_hand():
  xy = jnp.array([[[0.0, 0.0], [3.0, 4.0], [3.0, 5.0]],   # 5 + 1
                  [[1.0, 1.0], [9.0, 9.0], [0.0, 0.0]],   # one point: a dot
                  [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])  # padding
  np.testing.assert_allclose(ra.stroke_lengths(xy, jnp.array([3, 1, 0]), 1.5), [6.0, 1.5, 0.0])


def test_prefix_counts():
  fractions = jnp.array([0.1, 0.2, 0.3, 0.5, 1.0])
  np.testing.assert_array_equal(ra.prefix_counts(jnp.array(5), fractions), [1, 1, 2, 3, 5])
  np.testing.assert_array_equal(ra.prefix_counts(jnp.array(10), fractions), [1, 2, 3, 5, 10])
  np.testing.assert_array_equal(ra.prefix_counts(jnp.array(1), fractions), [1, 1, 1, 1, 1])


def test_spearman_by_hand():
  present = jnp.array([True, True, True, True, False])
  drawing = faithfulness.drawing_order(present)
  rho = lambda values: float(ra.spearman(faithfulness.ranking(jnp.array(values), present),
                                         drawing, present))
  assert rho([4, 3, 2, 1, 9]) == pytest.approx(1.0)  # first drawn = most positive
  assert rho([1, 2, 3, 4, 9]) == pytest.approx(-1.0)
  # ranks (2, 1, 3, 4) against (1, 2, 3, 4): sum d^2 = 2, 1 - 6 * 2 / (4 * 15) = 0.8
  assert rho([3, 4, 2, 1, 0]) == pytest.approx(0.8)
  # (1, 4, 2, 3): sum d^2 = 0 + 4 + 1 + 1 = 6, 1 - 36 / 60 = 0.4
  assert rho([4, 1, 3, 2, 0]) == pytest.approx(0.4)
  one = jnp.array([True, False, False])
  assert np.isnan(ra.spearman(faithfulness.drawing_order(one),
                              faithfulness.drawing_order(one), one))


def test_random_orders_correlate_zero_on_average():
  present = jnp.ones(8, bool)
  keys = jax.random.split(jax.random.key(1), 2000)
  rhos = jax.vmap(lambda k: ra.spearman(faithfulness.random_order(k, present),
                                        faithfulness.drawing_order(present), present))(keys)
  assert abs(float(rhos.mean())) < 3 * float(rhos.std()) / np.sqrt(len(keys))


def test_attributions_complete_and_occlusion_exact():
  renderer = ra.QueryRenderer.pipeline(32, 64, supersample=1)
  embed = _embed(32)
  xy, lens, num_segments, coverage = _coverage(renderer, DRAWING)
  present = jnp.asarray(lens > 0)
  photo = embed(renderer.images(sr.composite(coverage * 0.5))[None])[0]  # some unit vector
  out = ra.query_attributions(embed, renderer, coverage, present, photo, steps=64)
  assert float(out["sla_ig"][3]) == 0.0 and float(out["occlusion"][3]) == 0.0
  np.testing.assert_allclose(out["sla_ig"].sum(), out["score"] - out["blank_score"],
                             atol=2e-3 * abs(float(out["score"] - out["blank_score"])) + 1e-5)
  keep = present.astype(jnp.float32).at[1].set(0.0)
  without = embed(renderer.images(sr.composite(coverage, keep))[None])[0] @ photo
  np.testing.assert_allclose(out["occlusion"][1], out["score"] - without, atol=1e-5)
  orders = ra.orders(out, ("sla_ig",), present, jax.random.key(0))
  assert list(np.asarray(orders["drawing"])) == [0, 1, 2, 3]
  assert list(np.asarray(orders["sla_ig"])[:3]) == list(np.argsort(-np.asarray(out["sla_ig"][:3])))


def test_smoke_end_to_end(tmp_path):
  """Trains a tiny quickdraw_photo model (2 steps) and explains 6 of its test queries."""
  for folder in ("sketchy", "quickdraw"):
    if not (DATA / folder).exists():
      pytest.skip(f"real data not found at {DATA / folder}: this test needs the project's "
                  "../shared folder next to the checkout")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  run = lambda *args: subprocess.run([sys.executable, "-m", "sketchjax.main", *args], cwd=REPO,
                                     env=env, capture_output=True, text=True, timeout=900)
  sbir_dir, workdir = tmp_path / "sbir", tmp_path / "explain"
  proc = run("--config=configs/sbir_sketchy.py:quickdraw_photo,smoke", f"--workdir={sbir_dir}",
             "--config.train.num_steps=2", "--config.train.eval_every=2",
             "--config.train.checkpoint_every=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = run("--config=configs/retrieval_attribution.py:smoke", f"--workdir={workdir}",
             f"--config.sbir_workdir={sbir_dir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((workdir / "results.json").read_text())
  assert result["queries"] == 6 and result["gallery"] > 0
  assert result["render"]["query_cosine_soft_vs_pipeline"]["mean"] > 0.9
  assert set(result["early"]) == {"drawing", "random", "sla_ig"}
  full = [result["early"][o]["fraction"][-1]["map_all"] for o in result["early"]]
  assert max(full) - min(full) < 1e-6  # every order ends with the whole query
  assert np.isclose(full[0], result["render"]["soft"]["map_all"], atol=1e-5)
  paired = result["early_minus_drawing_order"]["sla_ig"]["fraction"][-1]["map_all"]
  assert abs(paired["mean"]) < 1e-6 and paired["count"] == 6  # whole queries: no difference
  for rho in result["spearman_vs_drawing_order"].values():
    assert -1.0 <= rho["mean"] <= 1.0
  for method in ("sla_ig", "occlusion"):  # the noisy-stroke filter for retrieval
    row = result["filter"][method]
    assert set(row) == {"dropped_strokes", "attribution", "random", "shortest"}
    assert 0 <= row["dropped_strokes"]["mean"] and row["dropped_strokes"]["count"] == 6
    assert all(0 < row[f]["map_all"] <= 1 for f in ("attribution", "random", "shortest"))
  per_query = np.load(workdir / "per_query.npz")
  assert per_query["sla_ig"].shape[0] == 6
  for name in ("retrieval_attribution.png", "early_retrieval.png"):
    assert (workdir / name).stat().st_size > 5000
