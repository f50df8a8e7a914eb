"""doodleNet port: weights vs the TF.js manifest, a numpy forward pass, real-bitmap accuracy."""

import json
import math
import pathlib
import shutil

import jax
import numpy as np
import pytest

from sketchjax.models.doodlenet import DoodleNet, load_doodlenet

MANIFEST_TO_MODULE = {"conv2d": "conv0", "conv2d_1": "conv1", "conv2d_2": "conv2",
                      "conv2d_3": "conv3", "conv2d_4": "conv4", "conv2d_5": "conv5",
                      "dense": "hidden", "dense_1": "classifier"}


def _raw_weights(folder: pathlib.Path) -> dict[str, np.ndarray]:
  """Manifest weights read straight from the single shard, independently of the loader."""
  (group,) = json.loads((folder / "model.json").read_text())["weightsManifest"]
  flat = np.fromfile(folder / group["paths"][0], "<f4")
  weights, offset = {}, 0
  for entry in group["weights"]:
    size = math.prod(entry["shape"])
    weights[entry["name"]] = flat[offset:offset + size].reshape(entry["shape"])
    offset += size
  assert offset == flat.size
  return weights


def _bitmaps(quickdraw_dir: pathlib.Path, category: str, rows: int) -> np.ndarray:
  """First `rows` official bitmaps of `category` -> float32[rows, 28, 28, 1] in [0, 1]."""
  pixels = np.load(quickdraw_dir / "bitmap" / f"{category}.npy")[:rows]
  return (pixels.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)


def _numpy_forward(weights: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
  """The Keras model in plain numpy: float[B, 28, 28, 1] -> softmax probabilities [B, 345]."""
  x = images.astype(np.float64)
  for stage in range(3):
    for conv in range(2):
      index = 2 * stage + conv
      name = "conv2d" if index == 0 else f"conv2d_{index}"
      kernel, bias = weights[f"{name}/kernel"], weights[f"{name}/bias"]
      padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      height, width = x.shape[1:3]
      x = sum(padded[:, dy:dy + height, dx:dx + width] @ kernel[dy, dx]
              for dy in range(3) for dx in range(3)) + bias
      x = np.maximum(x, 0.0)
    batch, height, width, channels = x.shape
    x = x[:, :height // 2 * 2, :width // 2 * 2]
    x = x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))
  hidden = np.tanh(x.reshape(len(x), -1) @ weights["dense/kernel"] + weights["dense/bias"])
  logits = hidden @ weights["dense_1/kernel"] + weights["dense_1/bias"]
  exp = np.exp(logits - logits.max(-1, keepdims=True))
  return exp / exp.sum(-1, keepdims=True)


def test_parameters_match_manifest(pretrained_dir):
  folder = pretrained_dir / "doodlenet"
  model, variables, names = load_doodlenet(folder)
  raw = _raw_weights(folder)
  assert len(raw) == 16
  for weight_name, value in raw.items():
    layer, kind = weight_name.split("/")
    loaded = variables["params"][MANIFEST_TO_MODULE[layer]][kind]
    assert loaded.shape == value.shape and loaded.dtype == np.float32, weight_name
    np.testing.assert_array_equal(loaded, value)
  assert (model.stage_filters, model.hidden_units, model.num_classes) == ((16, 32, 64), 512, 345)
  assert model.dropout_rate == pytest.approx(0.1)
  assert len(set(names)) == 345 and names[0] == "flashlight"  # the model's order, not sorted
  assert "alarm clock" in names and "The Great Wall of China" in names


def test_first_conv_pixels_by_hand(pretrained_dir, quickdraw_dir):
  folder = pretrained_dir / "doodlenet"
  model, variables, _ = load_doodlenet(folder)
  raw = _raw_weights(folder)
  image = _bitmaps(quickdraw_dir, "apple", 1)
  _, state = model.apply(variables, image, capture_intermediates=True)
  conv0 = np.asarray(state["intermediates"]["conv0"]["__call__"][0])[0]
  padded = np.pad(image[0, :, :, 0].astype(np.float64), 1)
  kernel, bias = raw["conv2d/kernel"][:, :, 0, :], raw["conv2d/bias"]
  ink = np.argwhere(image[0, :, :, 0] > 0.5)[0]
  for row, col in [(0, 0), (27, 13), tuple(ink)]:  # corner and edge test the 'same' padding
    patch = padded[row:row + 3, col:col + 3]
    expected = np.einsum("ij,ijo->o", patch, kernel) + bias
    np.testing.assert_allclose(conv0[row, col], expected, rtol=1e-5, atol=1e-6)


def test_matches_numpy_forward(pretrained_dir, quickdraw_dir):
  folder = pretrained_dir / "doodlenet"
  model, variables, _ = load_doodlenet(folder)
  images = np.concatenate([_bitmaps(quickdraw_dir, c, 2) for c in ("cat", "umbrella")])
  logits, out = model.apply(variables, images)
  assert logits.shape == (4, 345) and out["features"].shape == (4, 512)
  assert out["feature_map"].shape == (4, 3, 3, 64)
  np.testing.assert_allclose(jax.nn.softmax(logits), _numpy_forward(_raw_weights(folder), images),
                             rtol=1e-4, atol=1e-6)


def test_accuracy_on_official_bitmaps(pretrained_dir, quickdraw_dir):
  model, variables, names = load_doodlenet(pretrained_dir / "doodlenet")
  index = {name: i for i, name in enumerate(names)}
  predict = jax.jit(lambda v, x: model.apply(v, x)[0].argmax(-1))
  categories = sorted(path.stem for path in (quickdraw_dir / "bitmap").glob("*.npy"))
  assert len(categories) == 27
  correct = total = 0
  for category in categories:
    images = _bitmaps(quickdraw_dir, category, 200)
    correct += int((np.asarray(predict(variables, images)) == index[category]).sum())
    total += len(images)
  accuracy = correct / total
  print(f"\ndoodleNet top-1 over 345 classes on {total} official bitmaps "
        f"({len(categories)} categories x 200): {accuracy:.4f}")
  assert accuracy > 0.7


def test_dropout_only_in_training(pretrained_dir, quickdraw_dir):
  model, variables, _ = load_doodlenet(pretrained_dir / "doodlenet")
  images = _bitmaps(quickdraw_dir, "fish", 2)
  eval_logits, _ = model.apply(variables, images)
  np.testing.assert_array_equal(eval_logits, model.apply(variables, images, train=False)[0])
  train_logits, _ = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(0)})
  assert not np.allclose(train_logits, eval_logits)


def test_rejects_wrong_image_shape():
  model = DoodleNet()
  with pytest.raises(ValueError, match=r"\[B, 28, 28, 1\]"):
    model.init(jax.random.key(0), np.zeros((1, 32, 32, 1), np.float32))


def _writable_copy(folder: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  """Copy of the (read-only) shared model folder that the test may edit."""
  copy = tmp_path / folder.name
  copy.mkdir()
  for path in folder.iterdir():
    shutil.copyfile(path, copy / path.name)
  return copy


def test_reads_weights_split_over_shards_and_groups(pretrained_dir, tmp_path):
  folder = _writable_copy(pretrained_dir / "doodlenet", tmp_path)
  spec = json.loads((folder / "model.json").read_text())
  (group,) = spec["weightsManifest"]
  data = (folder / "group1-shard1of1.bin").read_bytes()
  (folder / "group1-shard1of1.bin").unlink()
  conv_bytes = sum(math.prod(w["shape"]) * 4 for w in group["weights"][:12])
  pieces = {"group1-shard1of2.bin": data[:1000], "group1-shard2of2.bin": data[1000:conv_bytes],
            "group2-shard1of1.bin": data[conv_bytes:]}
  for name, piece in pieces.items():
    (folder / name).write_bytes(piece)
  spec["weightsManifest"] = [
      {"paths": ["group1-shard1of2.bin", "group1-shard2of2.bin"], "weights": group["weights"][:12]},
      {"paths": ["group2-shard1of1.bin"], "weights": group["weights"][12:]}]
  (folder / "model.json").write_text(json.dumps(spec))
  _, split, _ = load_doodlenet(folder)
  _, whole, _ = load_doodlenet(pretrained_dir / "doodlenet")
  jax.tree.map(np.testing.assert_array_equal, split, whole)


def _edit_manifest(spec, folder):
  spec["weightsManifest"][0]["weights"][1]["dtype"] = "int32"


def _drop_weight(spec, folder):
  del spec["weightsManifest"][0]["weights"][-1]
  bin_path = folder / "group1-shard1of1.bin"
  bin_path.write_bytes(bin_path.read_bytes()[:-345 * 4])


def _truncate_shard(spec, folder):
  bin_path = folder / "group1-shard1of1.bin"
  bin_path.write_bytes(bin_path.read_bytes()[:-4])


def _change_padding(spec, folder):
  spec["modelTopology"]["model_config"]["config"]["layers"][3]["config"]["padding"] = "valid"


def _change_activation(spec, folder):
  spec["modelTopology"]["model_config"]["config"]["layers"][-2]["config"]["activation"] = "relu"


def _remove_shard(spec, folder):
  (folder / "group1-shard1of1.bin").unlink()


def _wrong_class_count(spec, folder):
  names = folder / "class_names.txt"
  names.write_text("\n".join(names.read_text().splitlines()[:-1]))


@pytest.mark.parametrize("corrupt, error, message", [
    (_edit_manifest, ValueError, r"model\.json: weight 'conv2d/bias' has dtype 'int32'"),
    (_drop_weight, ValueError, r"no weight 'dense_1/bias'"),
    (_truncate_shard, ValueError, r"group1-shard1of1\.bin: hold 2176800 bytes"),
    (_change_padding, ValueError, r"layer 3 'conv2d_2' \(Conv2D\) has padding='valid'"),
    (_change_activation, ValueError, r"'dense' \(Dense\) has activation='relu'"),
    (_remove_shard, FileNotFoundError, r"group1-shard1of1\.bin: weight shard"),
    (_wrong_class_count, ValueError, r"class_names\.txt: 344 class names"),
])
def test_bad_files_name_the_problem(pretrained_dir, tmp_path, corrupt, error, message):
  folder = _writable_copy(pretrained_dir / "doodlenet", tmp_path)
  spec = json.loads((folder / "model.json").read_text())
  corrupt(spec, folder)
  (folder / "model.json").write_text(json.dumps(spec))
  with pytest.raises(error, match=message):
    load_doodlenet(folder)
