"""ZSE-SBIR tile scoring: `ZseSbir.pair_logits_tile` (the CA attention per head over a whole
tile of t sketches x c photos) against `pair_logits` on the t * c repeated / tiled pairs, for
both CA conventions, both token reshapes and with token selection; `attend_tile` against
`attend`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sketchjax.models import zse_attention, zse_sbir

T, C = 3, 4  # t != c: a swapped pair axis shows
TINY = dict(image_size=64, patch_size=16, hidden=32, num_layers=2, num_heads=2, mlp_dim=64,
            stem_features=(8, 8, 16), ca_heads=2, ca_mlp_dim=48, rn_dim=16)  # 4 x 4 tokens


def _images(seed: int, batch: int) -> jax.Array:
  return jax.random.uniform(jax.random.key(seed), (batch, 64, 64, 3), minval=-1, maxval=1)


def _projections(model, variables, images, modality):
  sa = model.apply(variables, images, modality, method=model.encode)
  return model.apply(variables, sa, modality, method=model.project)


@pytest.mark.parametrize("switches", [
    {}, {"ca_convention": "figure"}, {"token_reshape": "spatial"},
    {"ca_convention": "figure", "token_reshape": "spatial"},
    {"keep_rates": (1, 0.75)}, {"keep_rates": (1, 0.75), "ca_convention": "figure"}])
def test_tile_equals_pair_logits_on_every_pair(switches):
  model = zse_sbir.ZseSbir(**{**TINY, **switches})
  variables = jax.jit(model.init)(jax.random.key(0), _images(0, 1), _images(1, 1))
  sketch = _projections(model, variables, _images(2, T), "sketch")
  photo = _projections(model, variables, _images(3, C), "photo")
  logits, aux = jax.jit(lambda v, s, p: model.apply(v, s, p, method=model.pair_logits_tile))(
      variables, sketch, photo)
  rows, cols = np.repeat(np.arange(T), C), np.tile(np.arange(C), T)
  want, want_aux = jax.jit(lambda v, s, p: model.apply(v, s, p, method=model.pair_logits))(
      variables, jax.tree.map(lambda a: a[rows], sketch), jax.tree.map(lambda a: a[cols], photo))
  assert logits.shape == (T, C) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, want.reshape(T, C), rtol=1e-5, atol=1e-6)
  for key in ("ca_ret_sketch", "ca_ret_photo", "anchors_sketch", "anchors_photo", "kernel",
              "scores"):
    np.testing.assert_allclose(aux[key], want_aux[key].reshape(aux[key].shape), rtol=1e-5,
                               atol=1e-5, err_msg=key)
  assert np.ptp(np.asarray(logits)) > 1e-4  # the pairs differ: a mixed-up pair would show


@pytest.mark.parametrize("value_of", ["query", "key"])
def test_attend_tile_is_attend_on_every_pair(value_of):
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (T, 5, 2, 3))
  k = jax.random.normal(keys[1], (C, 6, 2, 3))
  v = jax.random.normal(keys[2], (T if value_of == "query" else C, 6, 2, 3))
  out = zse_attention.attend_tile(q, k, v, value_of)
  assert out.shape == (T, C, 5, 2, 3)
  for a in range(T):
    for b in range(C):
      want = zse_attention.attend(q[a:a + 1], k[b:b + 1],
                                  v[a if value_of == "query" else b][None])[1][0]
      np.testing.assert_allclose(out[a, b], want, rtol=1e-5, atol=1e-6)


def test_attend_tile_rejects_bad_input():
  q, k = jnp.zeros((2, 5, 2, 3)), jnp.zeros((3, 6, 2, 3))
  with pytest.raises(ValueError, match="value_of"):
    zse_attention.attend_tile(q, k, k, "other")
  with pytest.raises(ValueError, match="as many values as keys"):
    zse_attention.attend_tile(q, k, q, "query")
