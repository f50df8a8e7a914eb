"""ZSE-SBIR network: parameter counts against the official model, shapes, the switches, the
cached (encode / project / pair_logits) path against the direct one, the CA layer, the view
reshape, the 2x2 conv, the kernel matrix and the RN against numpy, gradients, pretrained weights."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from sketchjax.models import mobilenet_v2, pretrained_weights, vit_image, zse_attention, zse_sbir

B = 2
TINY = dict(image_size=64, patch_size=16, hidden=32, num_layers=2, num_heads=2, mlp_dim=64,
            stem_features=(8, 8, 16), ca_heads=2, ca_mlp_dim=48, rn_dim=16)  # 4 x 4 tokens


def tiny(**kwargs) -> zse_sbir.ZseSbir:
  return zse_sbir.ZseSbir(**{**TINY, **kwargs})


def images(seed: int, size: int = 64, batch: int = B) -> jax.Array:
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3), minval=-1, maxval=1)


@functools.lru_cache(maxsize=None)
def tiny_params(keep_rates=None) -> dict:
  model = tiny(keep_rates=keep_rates)
  return jax.jit(model.init)(jax.random.key(0), images(0), images(1))


def flat(tree) -> dict:
  return traverse_util.flatten_dict(tree, sep="/")


def shapes(tree) -> dict:
  return {k: tuple(v.shape) for k, v in flat(tree).items()}


def apply(model, variables, *args, method=None, **kwargs):
  return jax.jit(lambda v, *a: model.apply(v, *a, method=method, **kwargs))(variables, *args)


# --- parameter counts -------------------------------------------------------------------------


def test_parameter_count_matches_the_official_model():
  # The official Model counted in torch: 102,180,632 ("102.18 M").
  #   SA  ViT-B/16 without mlp_head: patch embed 3*768*256 + 768 = 590,592; cls 768;
  #       pos 197*768 = 151,296; 12 blocks x 7,087,872 (LN 2*1,536, qkv 768*2,304 + 2,304,
  #       proj 768*768 + 768, fc1 768*3,072 + 3,072, fc2 3,072*768 + 768) = 85,054,464;
  #       encoder_norm 1,536                                                    = 85,798,656
  #       conv stem (no bias) 3*64*49 + 64*128*9 + 128*256*9 + 256*768*9        =  2,147,520
  #   CA  one EncoderLayer: 4 linears 4*(768*768 + 768) = 2,362,368, FFN 768*1,024 + 1,024 +
  #       1,024*768 + 768 = 1,574,656, 2 custom LN 3,072                        =  3,940,096
  #       x 3 in torch (layer1, layer2 and the dead `layers` clone)              = 11,820,288
  #   conv2d 768 -> 512, 2x2: 768*512*4 + 512                                   =  1,573,376
  #   RN  2,401*343 + 343 + 343*49 + 49 + 49 + 1                               =    840,792
  # Ours builds the two CA layers used (ca_sketch = layer1, ca_photo = layer2) and not the
  # dead clone: 102,180,632 - 3,940,096 = 98,240,536. Same parameters otherwise (q, k, v
  # split from the fused qkv, same biases).
  model = zse_sbir.zse_vit_b16()
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x, x)["params"]
  count = {name: zse_sbir.count_params(tree) for name, tree in params.items()}
  assert count == {"sa": 85_798_656 + 2_147_520, "ca_sketch": 3_940_096,
                   "ca_photo": 3_940_096, "anchor_conv": 1_573_376, "rn": 840_792}
  assert zse_sbir.count_params(params) == 98_240_536
  assert (zse_sbir.count_params(params) + zse_sbir.UNUSED_CA_COPY_PARAMS
          == zse_sbir.OFFICIAL_PARAMS == 102_180_632)
  sa_vit = {k: v for k, v in params["sa"].items() if k in zse_sbir.VIT_KEYS}
  assert zse_sbir.count_params(sa_vit) == 86_567_656 - 769_000  # vit_b16 less its 1000-way head


def test_paper_token_selection_at_vit_b16_size():
  # 196 -> 177 -> 160 -> 144 tokens; the kept tokens are the anchors (no conv), the code's
  # anchor=144 RN: 20,736 -> 1,728 -> 144 -> 1 (35,833,536 + 248,976 + 145 parameters).
  assert zse_attention.kept_token_counts(196, zse_sbir.PAPER_KEEP_RATES, 12) == (
      None, None, None, 177, None, None, 160, None, None, 144, None, None)
  model = zse_sbir.zse_vit_b16(keep_rates=zse_sbir.PAPER_KEEP_RATES)
  x = jax.ShapeDtypeStruct((3, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x, x)
  assert "anchor_conv" not in variables["params"]
  assert zse_sbir.count_params(variables["params"]["rn"]) == 36_082_657
  logits, aux = jax.eval_shape(model.apply, variables, x, x)
  assert logits.shape == (3,) and aux["kernel"].shape == (3, 144, 144)
  assert aux["sa_sketch"]["tokens"].shape == (3, 145, 768)
  assert aux["ca_attention_sketch"].shape == (3, 8, 145, 145)


def test_cpu_variants_keep_every_component():
  for model, tokens, anchors, count in ((zse_sbir.zse_small(), 196, 49, 3_536_200),
                                        (zse_sbir.zse_mobilenet(), 64, 16, 4_287_281)):
    x = jax.ShapeDtypeStruct((2, model.image_size, model.image_size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x, x)
    params = variables["params"]
    assert set(params) == {"sa", "ca_sketch", "ca_photo", "anchor_conv", "rn"}
    assert "conv_stem" in params["sa"] and zse_sbir.count_params(params) == count
    logits, aux = jax.eval_shape(model.apply, variables, x, x)
    assert aux["sa_sketch"]["tokens"].shape == (2, 1 + tokens, 192)
    assert aux["kernel"].shape == (2, anchors, anchors) and logits.shape == (2,)
  mobile = jax.eval_shape(zse_sbir.zse_mobilenet().init, jax.random.key(0), x, x)
  assert mobile["params"]["sa"]["mobilenet"]["head"]["conv"]["kernel"].shape == (1, 1, 320, 1280)


# --- shapes, cached path, gradients -----------------------------------------------------------


def test_shapes_and_named_intermediates():
  model = tiny()
  logits, aux = apply(model, tiny_params(), images(2), images(3))
  assert logits.shape == (B,) and logits.dtype == jnp.float32
  np.testing.assert_allclose(aux["scores"], jax.nn.sigmoid(logits), rtol=1e-6)
  assert aux["sa_sketch"]["tokens"].shape == (B, 17, 32)
  assert aux["sa_sketch"]["ret"].shape == aux["ca_ret_photo"].shape == (B, 32)
  assert aux["sa_sketch"]["ret_attention"].shape == (B, 2, 16)
  np.testing.assert_array_equal(aux["kept_photo"], np.tile(np.arange(16), (B, 1)))
  assert aux["ca_attention_sketch"].shape == (B, 2, 17, 17)
  np.testing.assert_allclose(aux["ca_attention_sketch"].sum(-1), 1, rtol=1e-5)
  assert aux["anchors_sketch"].shape == (B, 4, 16) and aux["kernel"].shape == (B, 4, 4)
  with pytest.raises(ValueError, match="expects images"):
    tiny().apply(tiny_params(), images(0, size=32), images(1, size=32))
  with pytest.raises(ValueError, match="ca_convention"):
    tiny(ca_convention="paper").init(jax.random.key(0), images(0), images(1))


@pytest.mark.parametrize("switches", [{}, {"ca_convention": "figure"},
                                      {"keep_rates": (1, 0.75), "conv_stem": "sketch"}])
def test_cached_projections_and_tiles_equal_the_direct_path(switches):
  model = tiny(**switches)
  variables = tiny_params(switches.get("keep_rates"))
  sketches, photos = images(4, batch=3), images(5, batch=3)
  logits, aux = apply(model, variables, sketches, photos)
  sa_s = apply(model, variables, sketches, method=zse_sbir.ZseSbir.encode, modality="sketch")
  sa_p = apply(model, variables, photos, method=zse_sbir.ZseSbir.encode, modality="photo")
  proj_s = apply(model, variables, sa_s, method=zse_sbir.ZseSbir.project, modality="sketch")
  proj_p = apply(model, variables, sa_p, method=zse_sbir.ZseSbir.project, modality="photo")
  cached, cached_aux = apply(model, variables, proj_s, proj_p,
                             method=zse_sbir.ZseSbir.pair_logits)
  np.testing.assert_allclose(cached, logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cached_aux["ca_ret_sketch"], aux["ca_ret_sketch"], atol=1e-5)
  # A 3 x 3 tile from the per-item projections: row i = sketch i against every photo.
  rows, cols = np.repeat(np.arange(3), 3), np.tile(np.arange(3), 3)
  tile, _ = apply(model, variables, jax.tree.map(lambda a: a[rows], proj_s),
                  jax.tree.map(lambda a: a[cols], proj_p), method=zse_sbir.ZseSbir.pair_logits)
  direct, _ = apply(model, variables, sketches[rows], photos[cols])
  np.testing.assert_allclose(tile, direct, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(tile.reshape(3, 3).diagonal(), logits, rtol=1e-5, atol=1e-6)


def test_gradients_finite_and_reach_every_part():
  model = tiny()
  variables = tiny_params()

  def loss(params):
    logits, aux = model.apply({"params": params}, images(6), images(7), train=True,
                              rngs={"dropout": jax.random.key(1)})
    targets = jnp.array([0.99, 0.01])
    triplet = jnp.sum((aux["ca_ret_sketch"] - aux["ca_ret_photo"]) ** 2)
    return 2 * triplet + 4 * jnp.mean((jax.nn.sigmoid(logits) - targets) ** 2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for key, grad in flat(grads).items():
    assert np.all(np.isfinite(grad)), key
  for part in ("sa/conv_stem/conv_0/kernel", "sa/patch_embed/kernel", "sa/pos_embed",
               "sa/encoder/block_1/mlp_out/kernel", "ca_sketch/attention/key/kernel",
               "ca_photo/norm_ffn/scale", "anchor_conv/kernel", "rn/dense_0/kernel"):
    assert np.abs(flat(grads)[part]).max() > 0, part
  # train=True uses dropout: two rngs give different logits.
  run = jax.jit(lambda key: model.apply(variables, images(6), images(7), train=True,
                                        rngs={"dropout": key})[0])
  assert not np.allclose(run(jax.random.key(1)), run(jax.random.key(2)))


# --- the switches change what they should, and only that ----------------------------------------


def run_both(variables, a: dict, b: dict, sketches=None, photos=None):
  sketches = images(8) if sketches is None else sketches
  photos = images(9) if photos is None else photos
  return (apply(tiny(**a), variables, sketches, photos)[1],
          apply(tiny(**b), variables, sketches, photos)[1])


def test_ca_convention_switch_changes_only_the_cross_attention():
  variables = tiny_params()
  code, figure = run_both(variables, {}, {"ca_convention": "figure"})
  assert shapes(tiny_params()) == shapes(jax.eval_shape(tiny(ca_convention="figure").init,
                                                        jax.random.key(0), images(0), images(1)))
  for modality in ("sketch", "photo"):
    np.testing.assert_array_equal(code[f"sa_{modality}"]["tokens"],
                                  figure[f"sa_{modality}"]["tokens"])
    assert not np.allclose(code[f"ca_tokens_{modality}"], figure[f"ca_tokens_{modality}"])


def test_token_reshape_switch_changes_only_the_anchors():
  view, spatial = run_both(tiny_params(), {}, {"token_reshape": "spatial"})
  np.testing.assert_array_equal(view["ca_tokens_sketch"], spatial["ca_tokens_sketch"])
  assert not np.allclose(view["anchors_sketch"], spatial["anchors_sketch"])


def test_conv_stem_on_sketches_only_leaves_photos_a_plain_patch_embedding():
  variables = tiny_params()
  both, sketch_only = run_both(variables, {}, {"conv_stem": "sketch"})
  np.testing.assert_array_equal(both["sa_sketch"]["tokens"], sketch_only["sa_sketch"]["tokens"])
  assert not np.allclose(both["sa_photo"]["tokens"], sketch_only["sa_photo"]["tokens"])
  # With the stem on sketches only, changing the stem changes the sketches' features only.
  params = flat(variables["params"])
  params["sa/conv_stem/conv_3/kernel"] = params["sa/conv_stem/conv_3/kernel"] * 3
  changed = {"params": traverse_util.unflatten_dict(params, sep="/")}
  _, after = run_both(changed, {}, {"conv_stem": "sketch"})
  np.testing.assert_array_equal(after["sa_photo"]["tokens"], sketch_only["sa_photo"]["tokens"])
  assert not np.allclose(after["sa_sketch"]["tokens"], sketch_only["sa_sketch"]["tokens"])


def test_token_selection_keeps_the_most_attended_tokens():
  keep = (1, 0.75)  # 16 -> 12 tokens after block 1; the 12 kept tokens are the anchors
  selected = tiny(keep_rates=keep)
  variables = tiny_params(keep)
  plain_params = {k: v for k, v in variables["params"].items() if k != "rn"}
  assert set(variables["params"]) == {"sa", "ca_sketch", "ca_photo", "rn"}
  _, aux = apply(selected, variables, images(8), images(9))
  kept = np.asarray(aux["kept_sketch"])
  assert kept.shape == (B, 12) and aux["kernel"].shape == (B, 12, 12)
  assert aux["sa_sketch"]["tokens"].shape == (B, 13, 32)
  assert np.all(np.diff(kept, axis=1) > 0)
  # The kept tokens are the 12 with the most [Ret] attention in block 1 (selection after it).
  attention = np.asarray(aux["sa_sketch"]["ret_attention"][:, 1])
  for row, att in zip(kept, attention):
    assert set(row) == set(np.argsort(-att, kind="stable")[:12])
  # Blocks before and at the selection see the same tokens as without selection.
  plain = tiny()
  plain_variables = {"params": {**plain_params, **{k: tiny_params()["params"][k]
                                                   for k in ("anchor_conv", "rn")}}}
  _, unpruned = apply(plain, plain_variables, images(8), images(9))
  np.testing.assert_allclose(unpruned["sa_sketch"]["ret_attention"],
                             aux["sa_sketch"]["ret_attention"], rtol=1e-6)
  # Rates of 1 everywhere select nothing: the same numbers as None.
  ones = tiny(keep_rates=(1, 1))
  logits_ones, _ = apply(ones, plain_variables, images(8), images(9))
  logits_none, _ = apply(plain, plain_variables, images(8), images(9))
  np.testing.assert_array_equal(logits_ones, logits_none)


# --- the CA layer, the view reshape, the conv, the kernel matrix and the RN against numpy ------


def np_code_layer_norm(x, p):
  std = x.std(-1, ddof=1, keepdims=True)
  return p["scale"] * (x - x.mean(-1, keepdims=True)) / (std + 1e-6) + p["bias"]


def np_ca_layer(p, q_in, k_in, v_in, residual):
  """ca.py's EncoderLayer(q, k, v) with the residual on `residual`, float64."""
  a = p["attention"]
  proj = lambda x, name: np.einsum("btd,dhe->bthe", x, a[name]["kernel"]) + a[name]["bias"]  # noqa
  q, k, v = proj(q_in, "query"), proj(k_in, "key"), proj(v_in, "value")
  scores = np.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  heads = np.einsum("bhqk,bkhe->bqhe", probs, v)
  h = np_code_layer_norm(residual + np.einsum("bqhe,hed->bqd", heads, a["out"]["kernel"])
                         + a["out"]["bias"], p["norm_attention"])
  f = np.maximum(h @ p["ffn_in"]["kernel"] + p["ffn_in"]["bias"], 0)
  return np_code_layer_norm(h + f @ p["ffn_out"]["kernel"] + p["ffn_out"]["bias"], p["norm_ffn"])


def np_view_conv(tokens, kernel, bias):
  """torch: tokens.view(B, D, g, g) -> Conv2d(k2, s2) -> .view(B, O, A).transpose(1, 2)."""
  b, n, d = tokens.shape
  g = round(n ** 0.5)
  x = tokens.reshape(b, d, g, g)  # NCHW, a raw reshape
  w = kernel.transpose(3, 2, 0, 1)  # Flax [2, 2, I, O] -> torch [O, I, 2, 2]
  out = np.zeros((b, w.shape[0], g // 2, g // 2))
  for i in range(g // 2):
    for j in range(g // 2):
      out[:, :, i, j] = np.einsum("bcxy,ocxy->bo", x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2], w)
  return (out + bias[None, :, None, None]).reshape(b, w.shape[0], -1).transpose(0, 2, 1)


def np_kernel_rn(anchors_s, anchors_p, rn):
  dots = np.einsum("bic,bjc->bij", anchors_s, anchors_p)
  with np.errstate(invalid="ignore", divide="ignore"):
    cos = dots / np.linalg.norm(anchors_s, axis=-1)[:, :, None]
    cos = cos / np.linalg.norm(anchors_p, axis=-1)[:, None, :]
  cos = np.where(np.isnan(cos), 0, cos)
  x = cos.reshape(cos.shape[0], -1)
  for name in ("dense_0", "dense_1"):
    x = np.maximum(x @ rn[name]["kernel"] + rn[name]["bias"], 0)
  return cos, (x @ rn["logit"]["kernel"] + rn["logit"]["bias"])[:, 0]


@pytest.mark.parametrize("convention", ["code", "figure"])
def test_cross_attention_view_conv_kernel_and_rn_against_numpy(convention):
  variables = tiny_params()
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  _, aux = apply(tiny(ca_convention=convention), variables, images(10), images(11))
  fs = np.asarray(aux["sa_sketch"]["tokens"], np.float64)
  fp = np.asarray(aux["sa_photo"]["tokens"], np.float64)
  if convention == "code":  # Q own, K other, V own (ca.py: layer1(x_sk, x_im, x_sk))
    out_s = np_ca_layer(p["ca_sketch"], fs, fp, fs, fs)
    out_p = np_ca_layer(p["ca_photo"], fp, fs, fp, fp)
  else:  # Q own, K and V the other modality's
    out_s = np_ca_layer(p["ca_sketch"], fs, fp, fp, fs)
    out_p = np_ca_layer(p["ca_photo"], fp, fs, fs, fp)
  np.testing.assert_allclose(aux["ca_tokens_sketch"], out_s, atol=2e-4)
  np.testing.assert_allclose(aux["ca_tokens_photo"], out_p, atol=2e-4)
  conv = p["anchor_conv"]
  anchors_s = np_view_conv(np.asarray(aux["ca_tokens_sketch"][:, 1:], np.float64),
                           conv["kernel"], conv["bias"])
  np.testing.assert_allclose(aux["anchors_sketch"], anchors_s, atol=1e-4)
  cos, logits = np_kernel_rn(anchors_s, np_view_conv(
      np.asarray(aux["ca_tokens_photo"][:, 1:], np.float64), conv["kernel"], conv["bias"]),
      p["rn"])
  np.testing.assert_allclose(aux["kernel"], cos, atol=1e-5)
  np.testing.assert_allclose(aux["scores"], 1 / (1 + np.exp(-logits)), atol=1e-5)


def test_spatial_reshape_is_the_grid_layout():
  variables = tiny_params()
  _, aux = apply(tiny(token_reshape="spatial"), variables, images(10), images(11))
  tokens = np.asarray(aux["ca_tokens_sketch"][:, 1:], np.float64)
  conv = jax.tree.map(np.asarray, variables["params"]["anchor_conv"])
  np.testing.assert_allclose(aux["anchors_sketch"],
                             np_view_conv(_nchw_as_view(tokens), conv["kernel"], conv["bias"]),
                             atol=1e-4)


def _nchw_as_view(tokens):
  """Tokens whose raw view(B, D, g, g) equals the spatial grid of `tokens` [B, g*g, D]."""
  b, n, d = tokens.shape
  g = round(n ** 0.5)
  return tokens.reshape(b, g, g, d).transpose(0, 3, 1, 2).reshape(b, n, d)


def test_kernel_matrix_zero_anchor_is_zero_with_finite_gradients():
  s = jnp.array([[[1.0, 0.0], [0.0, 0.0], [3.0, 4.0]]])
  p = jnp.array([[[0.0, 2.0], [1.0, 1.0]]])
  expected = np.array([[[0, 1 / math.sqrt(2)], [0, 0], [0.8, 7 / 5 / math.sqrt(2)]]])
  np.testing.assert_allclose(zse_attention.kernel_matrix(s, p), expected, rtol=1e-6)
  grad = jax.grad(lambda a: zse_attention.kernel_matrix(a, p).sum())(s)
  assert np.all(np.isfinite(grad))
  assert zse_attention.rn_widths(49) == (343, 49) and zse_attention.rn_widths(144) == (1728, 144)


def test_code_layer_norm_uses_unbiased_std_and_eps_on_std():
  x = jnp.array([[1.0, 2.0, 4.0, 9.0]])
  layer = zse_attention.CodeLayerNorm()
  y = layer.apply(layer.init(jax.random.key(0), x), x)
  xn = np.asarray(x, np.float64)
  np.testing.assert_allclose(y, (xn - xn.mean()) / (xn.std(ddof=1) + 1e-6), rtol=1e-6)


# --- pretrained weights -----------------------------------------------------------------------


def google_vit_npz(path, seed: int, d: int, layers: int, heads: int, mlp: int, grid: int):
  """google-research/vision_transformer `.npz` names and shapes, with a head, random values."""
  rng = np.random.default_rng(seed)
  r = lambda *shape, s=0.05: (s * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
  arrays = {"embedding/kernel": r(16, 16, 3, d), "embedding/bias": r(d), "cls": r(1, 1, d, s=.5),
            "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, d, s=0.5),
            "Transformer/encoder_norm/scale": 1 + r(d), "Transformer/encoder_norm/bias": r(d),
            "head/kernel": r(d, 5), "head/bias": r(5)}
  for i in range(layers):
    b = f"Transformer/encoderblock_{i}/"
    for ln in ("LayerNorm_0", "LayerNorm_2"):
      arrays[f"{b}{ln}/scale"], arrays[f"{b}{ln}/bias"] = 1 + r(d, s=0.1), r(d)
    for part in ("query", "key", "value"):
      arrays[f"{b}MultiHeadDotProductAttention_1/{part}/kernel"] = r(d, heads, d // heads, s=.2)
      arrays[f"{b}MultiHeadDotProductAttention_1/{part}/bias"] = r(heads, d // heads)
    arrays[f"{b}MultiHeadDotProductAttention_1/out/kernel"] = r(heads, d // heads, d)
    arrays[f"{b}MultiHeadDotProductAttention_1/out/bias"] = r(d)
    for dense, (fan_in, fan_out) in (("Dense_0", (d, mlp)), ("Dense_1", (mlp, d))):
      arrays[f"{b}MlpBlock_3/{dense}/kernel"] = r(fan_in, fan_out)
      arrays[f"{b}MlpBlock_3/{dense}/bias"] = r(fan_out)
  np.savez(path, **arrays)
  return arrays


def test_google_vit_npz_fills_the_backbone_and_matches_image_vit(tmp_path):
  path = tmp_path / "ViT-tiny.npz"
  arrays = google_vit_npz(path, 3, d=32, layers=2, heads=2, mlp=64, grid=2)  # resized to 4x4
  model = tiny(conv_stem="sketch", sa_ln_eps=vit_image.vit.LAYER_NORM_EPS)
  before = tiny_params()
  loaded = zse_sbir.load_pretrained(model, before, path)
  got, was = flat(loaded["params"]), flat(before["params"])
  np.testing.assert_array_equal(got["sa/patch_embed/kernel"], arrays["embedding/kernel"])
  np.testing.assert_array_equal(
      got["sa/encoder/block_1/attention/value/kernel"],
      arrays["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/value/kernel"])
  assert got["sa/pos_embed"].shape == (1, 17, 32)
  for key in was:  # everything outside the ViT is untouched
    if not key.startswith(tuple(f"sa/{k}" for k in zse_sbir.VIT_KEYS)):
      np.testing.assert_array_equal(got[key], was[key])
  # Photos (no conv stem under conv_stem="sketch") go through exactly a ViT with these weights.
  vit = vit_image.ImageViT(patch_size=16, hidden=32, num_layers=2, num_heads=2, mlp_dim=64)
  like = jax.eval_shape(vit.init, jax.random.key(0), images(0))
  vit_tokens = vit.apply(pretrained_weights.load_google_vit(path, like), images(12))[1]["tokens"]
  sa = apply(model, loaded, images(12), method=zse_sbir.ZseSbir.encode, modality="photo")
  np.testing.assert_allclose(sa["tokens"], vit_tokens, atol=2e-5)
  with pytest.raises(ValueError, match="ViT-bad.npz"):
    bad = tmp_path / "ViT-bad.npz"
    google_vit_npz(bad, 3, d=32, layers=3, heads=2, mlp=64, grid=2)
    zse_sbir.load_pretrained(model, before, bad)


def test_mobilenet_tokens_from_the_imagenet_tflite_weights(pretrained_dir):
  path = pretrained_dir / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite"
  model = zse_sbir.zse_mobilenet()
  x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
  like = jax.eval_shape(model.init, jax.random.key(0), x, x)
  variables = zse_sbir.load_pretrained(model, jax.tree.map(jnp.zeros_like, like), path)
  assert np.abs(flat(variables["params"])["sa/token_proj/kernel"]).max() == 0  # untouched
  reference, reference_variables, _ = mobilenet_v2.load_mobilenet_v2(path)
  image = images(13, size=256, batch=1)
  feature_map = jax.jit(reference.apply)(reference_variables, image)[1]["feature_map"]
  ours = jax.jit(zse_sbir.MobileNetFeatures().apply)(
      {"params": variables["params"]["sa"]["mobilenet"]}, image)
  np.testing.assert_allclose(ours, feature_map, atol=1e-5)


def test_init_variables_with_a_pretrained_file(tmp_path):
  path = tmp_path / "ViT.npz"
  arrays = google_vit_npz(path, 4, d=32, layers=2, heads=2, mlp=64, grid=4)
  variables = zse_sbir.init_variables(tiny(), jax.random.key(0), pretrained=path)
  np.testing.assert_array_equal(variables["params"]["sa"]["cls"], arrays["cls"])
  assert shapes(variables) == shapes(tiny_params())


def test_frozen_mobilenet_body_gets_no_gradient():
  model = zse_sbir.zse_mobilenet(image_size=64, num_layers=1, hidden=16, num_heads=2,
                                 mlp_dim=16, stem_features=(4, 4, 4, 4), ca_heads=2,
                                 ca_mlp_dim=8, rn_dim=4, freeze_mobilenet=True)
  x = images(15, batch=1)
  like = jax.eval_shape(model.init, jax.random.key(0), x, x)["params"]  # no init compile
  leaves, tree = jax.tree.flatten(like)
  params = jax.tree.unflatten(tree, [0.1 * jax.random.normal(jax.random.key(i), leaf.shape)
                                     for i, leaf in enumerate(leaves)])
  grads = jax.jit(jax.grad(lambda p: model.apply(
      {"params": p}, x, method=zse_sbir.ZseSbir.encode, modality="sketch")["ret"].sum()))(params)
  assert all(np.all(g == 0) for g in jax.tree.leaves(grads["sa"]["mobilenet"]))
  assert np.abs(grads["sa"]["token_proj"]["kernel"]).max() > 0
