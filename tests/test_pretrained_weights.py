"""Pretrained ResNet / ViT loaders: files written with the publishers' names, shapes and layouts
(random values) load into models whose outputs equal numpy forwards of the raw file arrays."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from scipy.special import erf

from sketchjax.models import pretrained_weights, torchvision_resnet, vit_image

# --- ResNet-18 in torchvision's state-dict layout ------------------------------------------------


def torchvision_resnet18_state(seed: int, num_classes: int = 1000) -> dict[str, np.ndarray]:
  """torchvision resnet18's state dict names and shapes (NCHW / OIHW), random values."""
  rng = np.random.default_rng(seed)
  state = {}

  def conv(name, out, inp, k):
    state[f"{name}.weight"] = (rng.standard_normal((out, inp, k, k)) *
                               math.sqrt(2 / (inp * k * k))).astype(np.float32)

  def bn(name, width):
    state[f"{name}.weight"] = rng.uniform(0.5, 1.5, width).astype(np.float32)
    state[f"{name}.bias"] = (0.1 * rng.standard_normal(width)).astype(np.float32)
    state[f"{name}.running_mean"] = (0.1 * rng.standard_normal(width)).astype(np.float32)
    state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, width).astype(np.float32)
    state[f"{name}.num_batches_tracked"] = np.array(100, np.int64)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  inp = 64
  for stage, width in enumerate((64, 128, 256, 512), 1):
    for block in range(2):
      name = f"layer{stage}.{block}"
      conv(f"{name}.conv1", width, inp, 3)
      bn(f"{name}.bn1", width)
      conv(f"{name}.conv2", width, width, 3)
      bn(f"{name}.bn2", width)
      if block == 0 and stage > 1:
        conv(f"{name}.downsample.0", width, inp, 1)
        bn(f"{name}.downsample.1", width)
      inp = width
  state["fc.weight"] = (0.05 * rng.standard_normal((num_classes, 512))).astype(np.float32)
  state["fc.bias"] = (0.05 * rng.standard_normal(num_classes)).astype(np.float32)
  return state


def np_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
  """torch Conv2d without bias: x [B, C, H, W], w [O, C, k, k] -> [B, O, H', W']."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  k = w.shape[-1]
  oh, ow = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
  patches = np.stack([x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                      for i in range(k) for j in range(k)], axis=-1)
  return np.einsum("bchwk,ock->bohw", patches, w.reshape(w.shape[0], w.shape[1], k * k))


def np_bn(x: np.ndarray, state: dict[str, np.ndarray], name: str) -> np.ndarray:
  """torch BatchNorm2d in eval mode (eps 1e-5) on [B, C, H, W]."""
  c = lambda v: v.astype(np.float64)[None, :, None, None]  # noqa: E731
  return ((x - c(state[f"{name}.running_mean"])) / np.sqrt(c(state[f"{name}.running_var"]) + 1e-5)
          * c(state[f"{name}.weight"]) + c(state[f"{name}.bias"]))


def np_resnet18(state: dict[str, np.ndarray], images_nhwc: np.ndarray) -> np.ndarray:
  """torchvision resnet18's eval forward in numpy (float64, NCHW) -> logits [B, classes]."""
  w = lambda name: state[name].astype(np.float64)  # noqa: E731
  relu = lambda v: np.maximum(v, 0)  # noqa: E731
  x = images_nhwc.transpose(0, 3, 1, 2).astype(np.float64)
  x = relu(np_bn(np_conv(x, w("conv1.weight"), 2, 3), state, "bn1"))
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  oh = (x.shape[2] - 3) // 2 + 1
  x = np.max(np.stack([x[:, :, i:i + 2 * oh:2, j:j + 2 * oh:2] for i in range(3)
                       for j in range(3)]), axis=0)
  for stage in range(1, 5):
    for block in range(2):
      name = f"layer{stage}.{block}"
      stride = 2 if stage > 1 and block == 0 else 1
      y = relu(np_bn(np_conv(x, w(f"{name}.conv1.weight"), stride, 1), state, f"{name}.bn1"))
      y = np_bn(np_conv(y, w(f"{name}.conv2.weight"), 1, 1), state, f"{name}.bn2")
      if f"{name}.downsample.0.weight" in state:
        x = np_bn(np_conv(x, w(f"{name}.downsample.0.weight"), stride, 0), state,
                  f"{name}.downsample.1")
      x = relu(x + y)
  return x.mean(axis=(2, 3)) @ w("fc.weight").T + w("fc.bias")


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
  state = torchvision_resnet18_state(0)
  path = tmp_path_factory.mktemp("resnet") / "resnet18.safetensors"
  safetensors.numpy.save_file(state, path)
  return path, state


def test_resnet18_safetensors_equals_numpy_torch_forward(resnet18_file):
  path, state = resnet18_file
  model = torchvision_resnet.resnet18()
  images = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  variables = pretrained_weights.load_torchvision_resnet(path, like)
  assert jax.tree.map(lambda a: a.shape, variables) == jax.tree.map(lambda a: a.shape, like)
  logits, out = model.apply(variables, images)
  expected = np_resnet18(state, images)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  np.testing.assert_array_equal(variables["batch_stats"]["layer2_0"]["downsample_1"]["var"],
                                state["layer2.0.downsample.1.running_var"])
  assert out["pooled"].shape == (2, 512)


def test_resnet_without_head_ignores_fc(resnet18_file):
  path, state = resnet18_file
  model = torchvision_resnet.resnet18(num_classes=None)
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  variables = pretrained_weights.load_torchvision_resnet(path, like)
  assert "fc" not in variables["params"]
  np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"],
                                state["conv1.weight"].transpose(2, 3, 1, 0))


def test_resnet_bad_files_name_file_and_key(tmp_path, resnet18_file):
  _, state = resnet18_file
  like = jax.eval_shape(torchvision_resnet.resnet18().init, jax.random.key(0),
                        jnp.zeros((1, 32, 32, 3)))
  missing = dict(state)
  del missing["layer3.1.bn2.running_var"]
  path = tmp_path / "missing.safetensors"
  safetensors.numpy.save_file(missing, path)
  with pytest.raises(ValueError, match=re.escape(f"{path}: no weight 'layer3.1.bn2.running_var'")):
    pretrained_weights.load_torchvision_resnet(path, like)

  misshapen = dict(state, **{"fc.weight": state["fc.weight"][:10]})
  path = tmp_path / "misshapen.safetensors"
  safetensors.numpy.save_file(misshapen, path)
  message = f"{path}: weight 'fc.weight' has shape (10, 512)"
  with pytest.raises(ValueError, match=re.escape(message)):
    pretrained_weights.load_torchvision_resnet(path, like)

  # A ResNet-18 file loaded into a ResNet-34: the first block the file lacks is named.
  like34 = jax.eval_shape(torchvision_resnet.resnet34().init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match=r"resnet18\.safetensors: no weight 'layer1\.2\."):
    pretrained_weights.load_torchvision_resnet(resnet18_file[0], like34)

  extra = dict(state, **{"layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)})
  path = tmp_path / "extra.safetensors"
  safetensors.numpy.save_file(extra, path)
  with pytest.raises(ValueError, match="1 weights the model does not use.*layer5.0.conv1.weight"):
    pretrained_weights.load_torchvision_resnet(path, like)

  with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
    pretrained_weights.load_torchvision_resnet(tmp_path / "nowhere.safetensors", like)


# --- ViT in timm's and Google's layouts ---------------------------------------------------------

D, LAYERS, HEADS, MLP, PATCH = 192, 4, 3, 768, 16  # vit_image.vit_small


def timm_vit_state(seed: int, grid: int, num_classes: int | None = 10) -> dict[str, np.ndarray]:
  """timm `vit_*_patch16` safetensors names and shapes, random values."""
  rng = np.random.default_rng(seed)
  r = lambda *shape, s=0.05: (s * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
  ln = lambda: (1 + r(D, s=0.1), r(D))  # noqa: E731
  state = {"patch_embed.proj.weight": r(D, 3, PATCH, PATCH), "patch_embed.proj.bias": r(D),
           "cls_token": r(1, 1, D, s=0.5), "pos_embed": r(1, 1 + grid * grid, D, s=0.5)}
  for i in range(LAYERS):
    b = f"blocks.{i}."
    state[b + "norm1.weight"], state[b + "norm1.bias"] = ln()
    state[b + "attn.qkv.weight"], state[b + "attn.qkv.bias"] = r(3 * D, D, s=0.1), r(3 * D)
    state[b + "attn.proj.weight"], state[b + "attn.proj.bias"] = r(D, D), r(D)
    state[b + "norm2.weight"], state[b + "norm2.bias"] = ln()
    state[b + "mlp.fc1.weight"], state[b + "mlp.fc1.bias"] = r(MLP, D), r(MLP)
    state[b + "mlp.fc2.weight"], state[b + "mlp.fc2.bias"] = r(D, MLP), r(D)
  state["norm.weight"], state["norm.bias"] = ln()
  if num_classes:
    state["head.weight"], state["head.bias"] = r(num_classes, D), r(num_classes)
  return state


def google_vit_arrays(seed: int, grid: int) -> dict[str, np.ndarray]:
  """google-research/vision_transformer `.npz` names and shapes (no head), random values."""
  rng = np.random.default_rng(seed)
  r = lambda *shape, s=0.05: (s * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
  hd = D // HEADS
  arrays = {"embedding/kernel": r(PATCH, PATCH, 3, D), "embedding/bias": r(D),
            "cls": r(1, 1, D, s=0.5),
            "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, D, s=0.5),
            "Transformer/encoder_norm/scale": 1 + r(D, s=0.1),
            "Transformer/encoder_norm/bias": r(D),
            "pre_logits/kernel": r(D, D), "pre_logits/bias": r(D),
            "head/kernel": r(D, 7), "head/bias": r(7)}
  for i in range(LAYERS):
    b = f"Transformer/encoderblock_{i}/"
    for ln in ("LayerNorm_0", "LayerNorm_2"):
      arrays[f"{b}{ln}/scale"], arrays[f"{b}{ln}/bias"] = 1 + r(D, s=0.1), r(D)
    for part in ("query", "key", "value"):
      arrays[f"{b}MultiHeadDotProductAttention_1/{part}/kernel"] = r(D, HEADS, hd, s=0.1)
      arrays[f"{b}MultiHeadDotProductAttention_1/{part}/bias"] = r(HEADS, hd)
    arrays[f"{b}MultiHeadDotProductAttention_1/out/kernel"] = r(HEADS, hd, D)
    arrays[f"{b}MultiHeadDotProductAttention_1/out/bias"] = r(D)
    for dense, (fan_in, fan_out) in (("Dense_0", (D, MLP)), ("Dense_1", (MLP, D))):
      arrays[f"{b}MlpBlock_3/{dense}/kernel"] = r(fan_in, fan_out)
      arrays[f"{b}MlpBlock_3/{dense}/bias"] = r(fan_out)
  return arrays


def plain_from_timm(s: dict[str, np.ndarray]) -> dict:
  """timm arrays -> plain matrices (x @ W, W [in, out]) for `np_vit`."""
  blocks = []
  for i in range(LAYERS):
    def g(name, i=i):
      return s[f"blocks.{i}.{name}"]

    qkv_w, qkv_b = g("attn.qkv.weight"), g("attn.qkv.bias")
    blocks.append({"ln1": (g("norm1.weight"), g("norm1.bias")),
                   "q": (qkv_w[:D].T, qkv_b[:D]), "k": (qkv_w[D:2 * D].T, qkv_b[D:2 * D]),
                   "v": (qkv_w[2 * D:].T, qkv_b[2 * D:]),
                   "o": (g("attn.proj.weight").T, g("attn.proj.bias")),
                   "ln2": (g("norm2.weight"), g("norm2.bias")),
                   "fc1": (g("mlp.fc1.weight").T, g("mlp.fc1.bias")),
                   "fc2": (g("mlp.fc2.weight").T, g("mlp.fc2.bias"))})
  return {"patch": (s["patch_embed.proj.weight"], s["patch_embed.proj.bias"]),
          "cls": s["cls_token"], "pos": s["pos_embed"], "blocks": blocks,
          "norm": (s["norm.weight"], s["norm.bias"])}


def plain_from_google(a: dict[str, np.ndarray]) -> dict:
  """Google's arrays -> plain matrices for `np_vit` (kernel [D, heads, hd] -> [D, D])."""
  blocks = []
  for i in range(LAYERS):
    def g(name, i=i):
      return a[f"Transformer/encoderblock_{i}/{name}"]

    def attn(part):
      return (g(f"MultiHeadDotProductAttention_1/{part}/kernel").reshape(D, D),
              g(f"MultiHeadDotProductAttention_1/{part}/bias").reshape(D))

    blocks.append({"ln1": (g("LayerNorm_0/scale"), g("LayerNorm_0/bias")),
                   "q": attn("query"), "k": attn("key"), "v": attn("value"), "o": attn("out"),
                   "ln2": (g("LayerNorm_2/scale"), g("LayerNorm_2/bias")),
                   "fc1": (g("MlpBlock_3/Dense_0/kernel"), g("MlpBlock_3/Dense_0/bias")),
                   "fc2": (g("MlpBlock_3/Dense_1/kernel"), g("MlpBlock_3/Dense_1/bias"))})
  return {"patch": (a["embedding/kernel"].transpose(3, 2, 0, 1), a["embedding/bias"]),
          "cls": a["cls"], "pos": a["Transformer/posembed_input/pos_embedding"], "blocks": blocks,
          "norm": (a["Transformer/encoder_norm/scale"], a["Transformer/encoder_norm/bias"])}


def np_layer_norm(x, scale_bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale_bias[0] + scale_bias[1]


def np_vit(p: dict, images: np.ndarray) -> np.ndarray:
  """ViT forward in numpy (float64; LN eps 1e-6, exact GELU) -> tokens [B, 1 + N, D]."""
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), p)
  b, h, w, _ = images.shape
  patches = images.astype(np.float64).reshape(b, h // PATCH, PATCH, w // PATCH, PATCH, 3)
  x = np.einsum("byixjc,dcij->byxd", patches, p["patch"][0]).reshape(b, -1, D) + p["patch"][1]
  x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, D)), x], axis=1) + p["pos"]
  split = lambda t: t.reshape(b, t.shape[1], HEADS, D // HEADS)  # noqa: E731
  for blk in p["blocks"]:
    y = np_layer_norm(x, blk["ln1"])
    q, k, v = (split(y @ blk[n][0] + blk[n][1]) for n in "qkv")
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D // HEADS)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    y = np.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, -1, D)
    x = x + y @ blk["o"][0] + blk["o"][1]
    y = np_layer_norm(x, blk["ln2"]) @ blk["fc1"][0] + blk["fc1"][1]
    y = 0.5 * y * (1 + erf(y / math.sqrt(2)))
    x = x + y @ blk["fc2"][0] + blk["fc2"][1]
  return np_layer_norm(x, p["norm"])


def vit_like(model, size):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


def test_timm_vit_safetensors_equals_numpy_forward(tmp_path):
  state = timm_vit_state(0, grid=2)
  path = tmp_path / "vit_small.safetensors"
  safetensors.numpy.save_file(state, path)
  model = vit_image.vit_small(num_classes=10)
  variables = pretrained_weights.load_vit(path, vit_like(model, 32))
  images = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  logits, out = model.apply(variables, images)
  tokens = np_vit(plain_from_timm(state), images)
  np.testing.assert_allclose(out["tokens"], tokens, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits, tokens[:, 0] @ state["head.weight"].T + state["head.bias"],
                             rtol=1e-4, atol=1e-4)


def test_google_vit_npz_equals_numpy_forward(tmp_path):
  arrays = google_vit_arrays(3, grid=2)
  path = tmp_path / "ViT-S_16.npz"
  np.savez(path, **arrays)
  model = vit_image.vit_small()  # no head: head/* and pre_logits/* are ignored
  variables = pretrained_weights.load_vit(path, vit_like(model, 32))
  images = np.random.default_rng(4).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  cls, out = model.apply(variables, images)
  tokens = np_vit(plain_from_google(arrays), images)
  np.testing.assert_allclose(out["tokens"], tokens, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(cls, out["tokens"][:, 0])


def test_vit_position_embeddings_resized_bilinearly(tmp_path):
  state = timm_vit_state(5, grid=2, num_classes=None)
  path = tmp_path / "vit_small_grid2.safetensors"
  safetensors.numpy.save_file(state, path)
  model = vit_image.vit_small()
  variables = pretrained_weights.load_timm_vit(path, vit_like(model, 64))  # 4x4 patches
  pos = np.asarray(variables["params"]["pos_embed"])
  assert pos.shape == (1, 17, D)
  np.testing.assert_array_equal(pos[0, 0], state["pos_embed"][0, 0])
  # 2 -> 4 with half-pixel centres: samples at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
  m = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
  grid = state["pos_embed"][0, 1:].reshape(2, 2, D)
  expected = np.einsum("yi,xj,ijd->yxd", m, m, grid).reshape(16, D)
  np.testing.assert_allclose(pos[0, 1:], expected, rtol=1e-6, atol=1e-6)
  images = np.random.default_rng(6).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
  _, out = model.apply(variables, images)
  np.testing.assert_allclose(out["tokens"], np_vit(dict(plain_from_timm(state), pos=pos), images),
                             rtol=1e-4, atol=1e-4)


def test_vit_bad_files_name_file_and_key(tmp_path):
  like = vit_like(vit_image.vit_small(), 32)
  state = timm_vit_state(7, grid=2, num_classes=None)
  state["blocks.1.attn.qkv.weight"] = state["blocks.1.attn.qkv.weight"].T.copy()
  path = tmp_path / "transposed.safetensors"
  safetensors.numpy.save_file(state, path)
  with pytest.raises(ValueError, match=re.escape(
      f"{path}: weight 'blocks.1.attn.qkv.weight' has shape (192, 576)")):
    pretrained_weights.load_vit(path, like)

  arrays = google_vit_arrays(8, grid=2)
  del arrays["Transformer/encoderblock_2/MlpBlock_3/Dense_0/bias"]
  path = tmp_path / "missing.npz"
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=re.escape(
      f"{path}: no weight 'Transformer/encoderblock_2/MlpBlock_3/Dense_0/bias'")):
    pretrained_weights.load_vit(path, like)

  with pytest.raises(ValueError, match=r"vit\.pth: ViT weights must be"):
    pretrained_weights.load_vit(tmp_path / "vit.pth", like)
