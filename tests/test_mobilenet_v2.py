"""MobileNetV2 port: shapes, both TFLite files, weights vs LiteRT's own reader, parity with LiteRT."""

import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from sketchjax.data.imagenet_classes import (SKETCHY_TO_IMAGENET, SKETCHY_UNMAPPED,
                                             imagenet_to_sketchy)
from conftest import need
from sketchjax.models import tflite_reference, tflite_weights
from sketchjax.models.mobilenet_v2 import MobileNetV2, load_mobilenet_v2

FILES = ("mobilenet_v2_1.0_224_quant.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite")
# A handful of real photos of classes ImageNet names (Sketchy) and of PACS.
PHOTOS = ("sketchy/photo/zebra", "sketchy/photo/tiger", "sketchy/photo/airplane",
          "sketchy/photo/teapot", "sketchy/photo/pizza", "sketchy/photo/umbrella",
          "tuberlin_pacs/photo/elephant", "tuberlin_pacs/photo/guitar",
          "tuberlin_pacs/photo/dog", "tuberlin_pacs/photo/horse")


@pytest.fixture
def mobilenet_dir(pretrained_dir) -> pathlib.Path:
  return need(pretrained_dir / "mobilenet_v2")


@pytest.fixture
def photos(pretrained_dir) -> np.ndarray:
  """uint8[10, 224, 224, 3]: the first photo of each folder in PHOTOS, bilinear-resized."""
  root = need(pretrained_dir.parent / "data")
  images = []
  for folder in PHOTOS:
    first = sorted(need(root / folder).iterdir())[0]
    image = Image.open(first).convert("RGB").resize((224, 224), Image.BILINEAR)
    images.append(np.asarray(image))
  return np.stack(images)


def test_shapes_and_parameter_counts():
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), np.float32)
  folded = jax.eval_shape(MobileNetV2().init, jax.random.key(0), images)
  (logits, out) = jax.eval_shape(MobileNetV2().apply, folded, images)
  assert logits.shape == out["logits"].shape == (2, 1001)
  assert out["feature_map"].shape == (2, 7, 7, 1280) and out["pooled"].shape == (2, 1280)
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  bn = jax.eval_shape(MobileNetV2(batch_norm=True).init, jax.random.key(0), images)
  # Keras' MobileNetV2 (1000 classes): 3,504,872 trainable + 34,112 BN statistics; +1,281 for
  # the background output. BN-folded: one bias per channel instead of BN's scale and offset.
  assert count(bn["params"]) == 3_504_872 + 1_281 and count(bn["batch_stats"]) == 34_112
  assert set(folded) == {"params"} and count(folded["params"]) == 3_506_153 - 34_112 // 2
  assert "bias" in folded["params"]["block3"]["expand"]["conv"]
  assert "bias" not in bn["params"]["block3"]["expand"]["conv"]


def test_small_images_and_batch_norm_training():
  model = MobileNetV2(num_classes=10, batch_norm=True)
  images = jax.random.uniform(jax.random.key(1), (2, 64, 96, 3), minval=-1, maxval=1)
  variables = model.init(jax.random.key(0), images)
  (logits, out), updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 10) and out["feature_map"].shape == (2, 2, 3, 1280)
  assert np.isfinite(logits).all()
  before = variables["batch_stats"]["stem"]["bn"]["mean"]
  assert not np.allclose(updates["batch_stats"]["stem"]["bn"]["mean"], before)
  with pytest.raises(ValueError, match="multiples of 32"):
    model.apply(variables, images[:, :60])


@pytest.mark.parametrize("file", FILES)
def test_weights_match_litert_reader(mobilenet_dir, file):
  """Stem and classifier weights equal LiteRT's tensors dequantised with LiteRT's parameters."""
  from ai_edge_litert.interpreter import Interpreter
  model, variables, names = load_mobilenet_v2(mobilenet_dir / file)
  assert names[0] == "background" and names[341] == "zebra" and len(names) == 1001
  interpreter = Interpreter(model_path=str(mobilenet_dir / file))
  found = 0
  for detail in interpreter.get_tensor_details():
    if tuple(detail["shape"]) not in ((32, 3, 3, 3), (1001, 1, 1, 1280)):
      continue
    q = detail["quantization_parameters"]
    shape = [1] * 4
    shape[q["quantized_dimension"]] = -1
    values = ((interpreter.get_tensor(detail["index"]).astype(np.float64)
               - q["zero_points"].reshape(shape)) * q["scales"].reshape(shape))
    if detail["shape"][0] == 32:
      np.testing.assert_allclose(variables["params"]["stem"]["conv"]["kernel"],
                                 values.transpose(1, 2, 3, 0), rtol=1e-6, atol=1e-7)
    else:
      np.testing.assert_allclose(variables["params"]["classifier"]["kernel"],
                                 values.reshape(1001, 1280).T, rtol=1e-6, atol=1e-7)
    found += 1
  assert found == 2
  per_channel = len(q["scales"]) > 1
  assert per_channel == ("ptq" in file)


@pytest.mark.parametrize("file", FILES)
def test_parity_with_litert_on_real_photos(mobilenet_dir, photos, file):
  model, variables, _ = load_mobilenet_v2(mobilenet_dir / file)
  litert, (in_scale, in_zero) = tflite_reference.litert_probabilities(mobilenet_dir / file,
                                                                      photos)
  port = np.asarray(jax.nn.softmax(model.apply(variables, photos / 127.5 - 1.0)[0]))
  # Same top-1 wherever LiteRT's is clear (0.2 above its second); near-ties may flip, as
  # activation quantisation moves probabilities by up to ~0.15 (a QAT teapot: eggnog 0.43 vs
  # teapot 0.32 in LiteRT, the reverse in float; the fake-quantised walk reproduces LiteRT).
  top2 = np.sort(litert, axis=1)[:, -2:]
  clear = top2[:, 1] - top2[:, 0] > 0.2
  same = port.argmax(1) == litert.argmax(1)
  assert clear.sum() >= 6 and same[clear].all() and same.sum() >= 7, (clear, same)
  difference = np.abs(port - litert)
  assert difference.max() < 0.15 and difference.mean() < 4e-4, (difference.max(), difference.mean())
  # The port equals a direct float walk of the TFLite graph; fake-quantising that walk's
  # activations as the integer runtime stores them brings it closer to LiteRT.
  graph = tflite_weights.read_tflite(mobilenet_dir / file)
  inputs = (photos.astype(np.float32) - in_zero) * in_scale
  reference = np.asarray(tflite_reference.graph_forward(graph, inputs))
  port_same_input = np.asarray(jax.nn.softmax(model.apply(variables, inputs)[0]))
  np.testing.assert_allclose(port_same_input, reference, atol=2e-5)
  fake_quant = np.asarray(tflite_reference.graph_forward(graph, inputs, fake_quant=True))
  assert np.abs(fake_quant - litert).mean() < 0.6 * difference.mean()


def test_broken_graph_names_file_and_operator(mobilenet_dir, tmp_path):
  source = mobilenet_dir / FILES[0]
  broken = tmp_path / "truncated.tflite"
  broken.write_bytes(b"not a flatbuffer at all")
  with pytest.raises(ValueError, match="truncated.tflite.*TFL3"):
    load_mobilenet_v2(broken)
  # A real graph whose stem conv has stride 1 instead of 2 (the option bytes patched).
  graph = tflite_weights.read_tflite(source)
  assert graph.operators[0].options["stride"] == (2, 2)
  data = bytearray(source.read_bytes())
  import tflite
  model = tflite.Model.GetRootAsModel(data, 0)
  table = model.Subgraphs(0).Operators(0).BuiltinOptions()
  options = tflite.Conv2DOptions()
  options.Init(table.Bytes, table.Pos)
  offset = options._tab.Offset(6)  # stride_w's vtable slot
  assert offset
  data[options._tab.Pos + offset] = 1
  patched = tmp_path / "stride.tflite"
  patched.write_bytes(bytes(data))
  shutil.copy(mobilenet_dir / "imagenet_labels.txt", tmp_path)
  with pytest.raises(ValueError, match=r"stride\.tflite: operator 0 \(CONV_2D\) has stride"):
    load_mobilenet_v2(patched)


def test_sketchy_imagenet_table(mobilenet_dir):
  sketchy = need(mobilenet_dir.parents[1] / "data" / "sketchy" / "photo")
  classes = {path.name for path in sketchy.iterdir()}
  assert len(classes) == 125
  assert set(SKETCHY_TO_IMAGENET) | set(SKETCHY_UNMAPPED) == classes
  assert not set(SKETCHY_TO_IMAGENET) & set(SKETCHY_UNMAPPED)
  inverse = imagenet_to_sketchy()
  assert len(inverse) == sum(len(v) for v in SKETCHY_TO_IMAGENET.values())  # no label shared
  assert all(1 <= index <= 1000 for index in inverse)
  names = (mobilenet_dir / "imagenet_labels.txt").read_text().splitlines()
  expected = {"airplane": "airliner", "zebra": "zebra", "tiger": "tiger", "dog": "Chihuahua",
              "teapot": "teapot", "wading_bird": "white stork", "snake": "thunder snake",
              "lizard": "banded gecko", "hedgehog": "echidna", "spider": "black and gold"}
  for sketchy_class, label in expected.items():
    assert names[SKETCHY_TO_IMAGENET[sketchy_class][0]].startswith(label), sketchy_class
  assert names[SKETCHY_TO_IMAGENET["dog"][-1]].startswith("Mexican hairless")
  assert names[SKETCHY_TO_IMAGENET["wading_bird"][-1]].startswith("limpkin")


def test_headless_backbone_returns_pooled_features():
  images = jnp.zeros((2, 64, 64, 3))
  model = MobileNetV2(num_classes=None)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  assert "classifier" not in shapes["params"] and "head" in shapes["params"]
  variables = model.init(jax.random.key(0), images)
  pooled, aux = model.apply(variables, images)
  assert pooled.shape == (2, 1280) and "logits" not in aux
  np.testing.assert_array_equal(pooled, aux["pooled"])
