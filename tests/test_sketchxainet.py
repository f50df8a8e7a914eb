"""Tests of SketchXAINet: shapes, parameter counts, packed path, padding, ablations."""

import math
import re

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import pytest

from sketchjax.data.tokenize import pack_strokes

from sketchjax.models import sketchxainet
from sketchjax.models.sketchxainet import SketchXAINet
from sketchjax.models.vit import Encoder

SMALL = dict(hidden=32, num_layers=2, num_heads=2, mlp_dim=64, max_strokes=48)


def _apply(model, params, batch, **kwargs):
  """Jitted `model.apply` (eager op-by-op execution is far slower to test)."""
  return jax.jit(model.apply, static_argnames="train")(params, batch, **kwargs)


def _init(model, batch, seed=0):
  return jax.jit(model.init, static_argnames="train")(jax.random.key(seed), batch, train=False)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _batch(strokes_per_sketch, slots, num_points=6, seed=0):
  """Random tokenised batch: sketch b has strokes_per_sketch[b] strokes in slots 0..n-1."""
  rng = np.random.default_rng(seed)
  num = len(strokes_per_sketch)
  points = np.zeros((num, slots, num_points, 4), np.float32)
  stroke_len = np.zeros((num, slots), np.int32)
  loc = np.zeros((num, slots, 2), np.float32)
  for b, n in enumerate(strokes_per_sketch):
    for s in range(n):
      length = int(rng.integers(1, num_points + 1))
      points[b, s, 1:length, :2] = rng.normal(0, 0.1, (length - 1, 2))
      points[b, s, :length, 2] = 1
      points[b, s, length - 1, 2:] = (0, 1)
      stroke_len[b, s] = length
      loc[b, s] = rng.uniform(-0.7, 0.7, 2)
  return {"points": points, "stroke_len": stroke_len, "loc": loc,
          "label": np.arange(num, dtype=np.int32) % 5}


def _packed(batch, shards):
  """The batch with its strokes packed in rows per shard, as the tokeniser does."""
  packed_points, packed_index = pack_strokes(batch["points"], batch["stroke_len"],
                                             num_shards=shards, row_length=12, row_quantum=1)
  return dict(batch, packed_points=packed_points, packed_index=packed_index)


@pytest.fixture(scope="module")
def small_model_and_params():
  model = SketchXAINet(num_classes=5, **SMALL)
  params = _init(model, _batch([2, 3], 8))
  return model, params


def test_tiny_345_parameter_count():
  batch = jax.tree.map(jnp.asarray, _batch([1], 196, num_points=2))
  shapes = jax.eval_shape(
      lambda: sketchxainet.tiny(345).init(jax.random.key(0), batch, train=False))["params"]
  counts = {name: _count(tree) for name, tree in shapes.items()}
  assert counts == {
      "encoder": 5_338_752,  # 12 blocks + final LayerNorm
      "stroke_shape": 301_056 - 1_536,  # one bias per direction and layer, not PyTorch's two
      "order": 37_632,
      "location": 576,
      "head": 66_585,
      "cls_token": 192,
  }
  assert _count(shapes) == 5_744_793 - 1_536 == 5_743_257


def test_base_345_parameter_count():
  batch = jax.tree.map(jnp.asarray, _batch([1], 196, num_points=2))
  shapes = jax.eval_shape(
      lambda: sketchxainet.base(345).init(jax.random.key(0), batch, train=False))["params"]
  assert _count(shapes["encoder"]) == 85_056_000
  assert _count(shapes["stroke_shape"]) == 4_743_168 - 6_144
  assert _count(shapes) == 90_211_929


def test_shapes_and_intermediates(small_model_and_params):
  model, params = small_model_and_params
  batch = _batch([3, 1, 5], 8)
  batch["stroke_len"][1, 0] = 0  # a sketch with no strokes at all still runs
  logits, out = _apply(model, params, batch, train=False)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  assert out["shape_embedding"].shape == out["stroke_tokens"].shape == (3, 8, 32)
  assert out["encoded"].shape == (3, 9, 32)
  assert out["cls"].shape == (3, 32)
  np.testing.assert_array_equal(out["logits"], logits)
  empty = batch["stroke_len"] == 0
  np.testing.assert_array_equal(np.asarray(out["shape_embedding"])[empty], 0.0)
  assert np.all(np.abs(np.asarray(out["shape_embedding"])[~empty]).sum(-1) > 0)


@pytest.mark.parametrize("shards", [1, 2])
def test_packed_path_equals_unpacked(small_model_and_params, shards):
  model, params = small_model_and_params
  batch = _batch([2, 5, 1, 3], 8, seed=shards)
  logits, out = _apply(model, params, batch, train=False)
  packed = _packed(batch, shards)
  packed_logits, packed_out = _apply(model, params, packed, train=False)
  np.testing.assert_allclose(packed_out["shape_embedding"], out["shape_embedding"],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(packed_logits, logits, rtol=1e-5, atol=1e-5)


def test_precomputed_shape_embeddings_give_the_same_logits(small_model_and_params):
  model, params = small_model_and_params
  batch = _batch([2, 5, 1, 3], 8, seed=7)
  logits, out = _apply(model, params, batch, train=False)
  embedded = jax.jit(lambda p, b: sketchxainet.with_shape_embeddings(model, p["params"], b))(
      params, _packed(batch, 2))
  assert not {"points", "packed_points", "packed_index"} & set(embedded)
  np.testing.assert_allclose(embedded["shape_embedding"], out["shape_embedding"], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(_apply(model, params, embedded, train=False)[0], logits,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_logits_only_gives_the_same_logits_and_location_gradients(mask_padding):
  """The last block computing the CLS token alone changes neither the logits nor d/d loc."""
  model = SketchXAINet(num_classes=5, mask_padding=mask_padding, **SMALL)
  batch = _batch([2, 5, 1, 3], 8, seed=3)
  params = _init(model, batch, seed=2)

  def target_logit(loc, logits_only):
    logits, out = model.apply(params, {**batch, "loc": loc}, train=False, logits_only=logits_only)
    return logits[:, 1].sum(), (logits, out["encoded"])

  grad = jax.jit(jax.grad(target_logit, has_aux=True), static_argnums=1)
  (full_grad, (full, full_encoded)), (cls_grad, (cls, cls_encoded)) = (
      grad(jnp.asarray(batch["loc"]), flag) for flag in (False, True))
  assert cls_encoded.shape == (4, 1, 32) and full_encoded.shape == (4, 9, 32)
  np.testing.assert_allclose(cls, full, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cls_encoded[:, 0], full_encoded[:, 0], rtol=1e-5, atol=1e-5)
  assert np.abs(full_grad).max() > 1e-4  # the locations matter
  np.testing.assert_allclose(cls_grad, full_grad, rtol=1e-4, atol=1e-8)


def test_packed_shape_encoder_stays_on_each_data_shard(small_model_and_params):
  """With the batch and the packed rows sharded over 8 devices, no collective is compiled."""
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  model, params = small_model_and_params
  batch = _batch([2, 5, 1, 3, 4, 1, 2, 6], 8)
  batch = _packed(batch, 8)
  mesh = jax.make_mesh((8,), ("data",))
  sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
  embed = jax.jit(lambda p, b: model.apply(p, b, train=False)[1]["shape_embedding"])
  hlo = embed.lower(params, sharded).compile().as_text()
  assert not re.search(r"all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter", hlo)
  unpacked = {k: v for k, v in batch.items() if not k.startswith("packed_")}
  np.testing.assert_allclose(embed(params, sharded), embed(params, unpacked), rtol=1e-5, atol=1e-5)


def test_masked_padding_makes_output_independent_of_slot_count():
  model = SketchXAINet(num_classes=5, mask_padding=True, **SMALL)
  narrow, wide = _batch([2, 5, 3], 16), _batch([2, 5, 3], 40)
  params = _init(model, narrow, seed=1)
  np.testing.assert_allclose(_apply(model, params, wide, train=False)[0],
                             _apply(model, params, narrow, train=False)[0], rtol=1e-5, atol=1e-5)
  official = SketchXAINet(num_classes=5, **SMALL)  # padding attended: S matters
  assert not np.allclose(_apply(official, params, wide, train=False)[0],
                         _apply(official, params, narrow, train=False)[0], atol=1e-4)


def test_gradients_finite_in_training_mode(small_model_and_params):
  model, params = small_model_and_params
  batch = _batch([2, 4], 8)

  def loss(p, loc):
    logits, _ = model.apply(p, dict(batch, loc=loc), train=True,
                            rngs={"dropout": jax.random.key(2)})
    return -jax.nn.log_softmax(logits)[jnp.arange(2), batch["label"]].mean()

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, jnp.asarray(batch["loc"]))
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert np.abs(grads[1][0, :2]).sum() > 0  # locations are differentiable (SLI)


def test_dropout_only_in_training(small_model_and_params):
  model, params = small_model_and_params
  batch = _batch([2, 4], 8)
  apply = lambda key: _apply(model, params, batch, train=True, rngs={"dropout": key})[0]
  assert not np.allclose(apply(jax.random.key(0)), apply(jax.random.key(1)))


@pytest.mark.parametrize("switch, missing", [("use_shape", "stroke_shape"),
                                             ("use_location", "location"),
                                             ("use_order", "order")])
def test_ablation_switches_drop_their_parameters(switch, missing):
  model = SketchXAINet(num_classes=5, **SMALL, **{switch: False})
  batch = _batch([2, 3], 8)
  params = _init(model, batch)["params"]
  assert set(params) == {"stroke_shape", "location", "order", "cls_token", "encoder",
                         "head"} - {missing}
  logits, out = _apply(model, {"params": params}, batch, train=False)
  assert np.isfinite(logits).all()
  if switch == "use_shape":
    np.testing.assert_array_equal(out["shape_embedding"], 0.0)


def test_too_many_slots_is_an_error(small_model_and_params):
  model, params = small_model_and_params
  with pytest.raises(ValueError, match="at most 48"):
    _apply(model, params, _batch([1], 49), train=False)


def _layer_norm(x, p):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-12) * p["scale"] + p["bias"]


def _block_numpy(x, p):
  """HF ViTLayer in numpy (pre-LN, exact GELU, eps 1e-12), one sequence [T, H]."""
  a = p["attention"]
  y = _layer_norm(x, p["norm_attention"])
  q, k, v = (np.einsum("th,hnd->ntd", y, a[n]["kernel"]) + a[n]["bias"][:, None]
             for n in ("query", "key", "value"))
  scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  x = x + np.einsum("ntd,ndh->th", probs @ v, a["out"]["kernel"]) + a["out"]["bias"]
  y = _layer_norm(x, p["norm_mlp"]) @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"]
  y = y * 0.5 * (1 + np.vectorize(math.erf)(y / np.sqrt(2)))
  return x + y @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]


def test_encoder_matches_hf_vit_reference():
  encoder = Encoder(num_layers=2, hidden=16, mlp_dim=32, num_heads=2)
  x = np.random.default_rng(0).normal(size=(1, 5, 16)).astype(np.float32)
  params = jax.jit(encoder.init, static_argnames="train")(jax.random.key(0), x, train=False)
  out = jax.jit(encoder.apply, static_argnames="train")(params, x, train=False)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  expected = x[0].astype(np.float64)
  for i in range(2):
    expected = _block_numpy(expected, p[f"block_{i}"])
  expected = _layer_norm(expected, p["final_norm"])
  np.testing.assert_allclose(out[0], expected, rtol=1e-4, atol=1e-4)
  # A masked key does not influence anything.
  mask = np.array([[True, True, True, True, False]])
  changed = x.copy()
  changed[0, 4] += 5.0
  apply = jax.jit(encoder.apply, static_argnames="train")
  np.testing.assert_allclose(apply(params, x, mask, train=False)[0, :4],
                             apply(params, changed, mask, train=False)[0, :4], rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = SketchXAINet(num_classes=5, dtype=jnp.bfloat16, **SMALL)
  batch = _batch([2, 3], 8)
  params = _init(model, batch)
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  logits, out = _apply(model, params, batch, train=False)
  assert logits.dtype == jnp.float32 and out["encoded"].dtype == jnp.bfloat16
  reference = _apply(SketchXAINet(num_classes=5, **SMALL), params, batch, train=False)[0]
  np.testing.assert_allclose(logits, reference, atol=0.1)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("broadcast_dropout", [False, True])
def test_head_major_attention_equals_flax_attention(dtype, broadcast_dropout):
  """Same numbers as flax's dot_product_attention: mask, fp32 softmax and the same dropout mask."""
  from flax import linen as nn
  from sketchjax.models.vit import head_major_attention
  q, k, v = (jax.random.normal(jax.random.key(i), (3, 2, 7, 2, 8)).astype(dtype)
             for i in range(3))
  q = q[:, :, :5]  # fewer queries than keys, as a first_only block
  mask = jax.random.bernoulli(jax.random.key(3), 0.7, (3, 2, 1, 1, 7)).at[..., 0].set(True)
  kwargs = dict(mask=mask, dropout_rng=jax.random.key(4), dropout_rate=0.1,
                broadcast_dropout=broadcast_dropout, deterministic=False, dtype=dtype,
                force_fp32_for_softmax=True)
  ours = jax.jit(lambda *a: head_major_attention(*a, **kwargs))(q, k, v)
  theirs = jax.jit(lambda *a: nn.dot_product_attention(*a, **kwargs))(q, k, v)
  assert ours.shape == theirs.shape == (3, 2, 5, 2, 8) and ours.dtype == theirs.dtype
  tol = 1e-6 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs, np.float32),
                             rtol=tol, atol=tol)
  grads = [jax.jit(jax.grad(lambda q, fn=fn: fn(q, k, v, **kwargs).astype(jnp.float32).sum()))(q)
           for fn in (head_major_attention, nn.dot_product_attention)]
  np.testing.assert_allclose(np.asarray(grads[0], np.float32), np.asarray(grads[1], np.float32),
                             rtol=tol, atol=tol)


def test_packed_rows_of_the_point_bucket_give_the_same_logits_and_gradients():
  """TokenizerConfig.bucket_packed_rows: shorter packed rows, the same faithful model outputs."""
  from sketchjax.data import tokenize
  from sketchjax.sketch.sketch import Sketch
  rng = np.random.default_rng(0)
  sketches = [Sketch(tuple(rng.uniform(-0.8, 0.8, (int(rng.integers(1, 12)), 2))
                           for _ in range(int(rng.integers(1, 6))))) for _ in range(4)]
  config = dict(max_strokes=SMALL["max_strokes"], point_buckets=(16, 64), num_shards=2,
                slot_points=False)
  long_rows, short_rows = (tokenize.tokenize_batch(sketches, [0, 1, 2, 3],
                                                   tokenize.TokenizerConfig(
                                                       bucket_packed_rows=short, **config))
                           for short in (False, True))
  assert long_rows["packed_points"].shape[2] == 64 and short_rows["packed_points"].shape[2] == 16
  model = SketchXAINet(num_classes=5, **SMALL)
  params = _init(model, long_rows)

  def loss(p, batch):
    return model.apply(p, batch, train=False)[0].sum()

  value_grad = jax.jit(jax.value_and_grad(loss))
  (long_value, long_grads), (short_value, short_grads) = (value_grad(params, b)
                                                          for b in (long_rows, short_rows))
  np.testing.assert_allclose(long_value, short_value, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(long_grads), jax.tree.leaves(short_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
