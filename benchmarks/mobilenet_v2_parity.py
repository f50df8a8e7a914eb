"""The MobileNetV2 port against LiteRT on every real Sketchy (3,125) and PACS (700) photo.

For each TFLite file: the share of photos where the port's top-1 equals
LiteRT's, the largest and mean |probability difference|, the same for the
float graph walk with fake-quantised activations (what the integer runtime
stores between operators, which the float port does not do), the port's
speed, and the port's top-1 hit rate on the Sketchy photos of the classes
mapped to ImageNet labels (a hit: the top-1 is one of the class's labels).
Photos are bilinear-resized to 224 once; LiteRT gets the uint8 pixels, the
port x/127.5 - 1, the fake-quant walk LiteRT's dequantised input.

  .venv/bin/python benchmarks/mobilenet_v2_parity.py [--shared ../shared] [--batch 64]
      [--datasets sketchy,pacs] [--files <a.tflite>,<b.tflite>] [--no_fake_quant]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import numpy as np
from PIL import Image

from sketchjax.data.imagenet_classes import SKETCHY_TO_IMAGENET
from sketchjax.models import tflite_reference, tflite_weights
from sketchjax.models.mobilenet_v2 import load_mobilenet_v2

FILES = ("mobilenet_v2_1.0_224_quant.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite")


def load_photos(folder: pathlib.Path) -> tuple[np.ndarray, list[str]]:
  """uint8[N, 224, 224, 3] of every photo under folder/<class>/, and each photo's class."""
  paths = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
  images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR))
                     for p in paths])
  return images, [p.parent.name for p in paths]


def batched(fn, images: np.ndarray, batch: int) -> np.ndarray:
  """fn over images in fixed-size batches (the last one padded), concatenated."""
  out = []
  for start in range(0, len(images), batch):
    chunk = images[start:start + batch]
    padded = np.concatenate([chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:],
                                             chunk.dtype)])
    out.append(np.asarray(fn(padded))[:len(chunk)])
  return np.concatenate(out)


def compare(name: str, probs: np.ndarray, litert: np.ndarray) -> str:
  same = (probs.argmax(1) == litert.argmax(1)).mean()
  top2 = np.sort(litert, axis=1)[:, -2:]
  clear = top2[:, 1] - top2[:, 0] > 0.2
  same_clear = (probs.argmax(1) == litert.argmax(1))[clear].mean()
  difference = np.abs(probs - litert)
  return (f"{name:<22} {100 * same:6.2f}% {100 * same_clear:8.2f}% ({clear.sum():4d})"
          f" {difference.max():8.4f} {difference.mean():10.2e}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shared", type=pathlib.Path,
                      default=pathlib.Path(__file__).resolve().parents[2] / "shared")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--datasets", default="sketchy,pacs", help="comma-separated subset")
  parser.add_argument("--files", default=",".join(FILES), help="comma-separated subset")
  parser.add_argument("--no_fake_quant", action="store_true",
                      help="skip the fake-quant graph walk (the slow part)")
  args = parser.parse_args()
  folders = {"sketchy": "sketchy/photo", "pacs": "tuberlin_pacs/photo"}
  datasets = {name: load_photos(args.shared / "data" / folders[name])
              for name in args.datasets.split(",")}
  print("photos: " + ", ".join(f"{name} {len(images)}" for name, (images, _) in datasets.items())
        + f"; devices {jax.devices()}")
  header = (f"{'':<22} {'top-1 =':>7} {'clear* =':>9} {'(n)':>6} {'max|dp|':>8} {'mean|dp|':>10}")
  for file in args.files.split(","):
    path = args.shared / "pretrained" / "mobilenet_v2" / file
    model, variables, _ = load_mobilenet_v2(path)
    graph = tflite_weights.read_tflite(path)
    port = jax.jit(lambda x: jax.nn.softmax(model.apply(variables, x / 127.5 - 1.0)[0]))
    fake = jax.jit(lambda x: tflite_reference.graph_forward(graph, x, fake_quant=True))
    print(f"\n{file}\n{header}")
    for name, (images, classes) in datasets.items():
      start = time.perf_counter()
      litert, (in_scale, in_zero) = tflite_reference.litert_probabilities(path, images)
      litert_rate = len(images) / (time.perf_counter() - start)
      batched(port, images[:args.batch].astype(np.float32), args.batch)  # compile
      start = time.perf_counter()
      probs = batched(port, images.astype(np.float32), args.batch)
      port_rate = len(images) / (time.perf_counter() - start)
      print(compare(f"{name} port", probs, litert))
      if not args.no_fake_quant:
        quantised = batched(fake, (images.astype(np.float32) - in_zero) * in_scale, args.batch)
        print(compare(f"{name} fake-quant walk", quantised, litert))
      print(f"{name:<22} speed: port {port_rate:.1f} images/s (batch {args.batch}), "
            f"LiteRT {litert_rate:.1f} images/s (batch 1)")
      if name == "sketchy":
        mapped = np.array([c in SKETCHY_TO_IMAGENET for c in classes])
        for source, p in (("port", probs), ("LiteRT", litert)):
          top1 = p.argmax(1)
          hits = [top1[i] in SKETCHY_TO_IMAGENET[c] for i, c in enumerate(classes) if mapped[i]]
          print(f"{name:<22} {source} top-1 in the class's ImageNet labels: "
                f"{100 * np.mean(hits):.1f}% of {mapped.sum()} photos "
                f"({len(SKETCHY_TO_IMAGENET)} mapped classes)")
  print("\n* clear: photos where LiteRT's top-1 is more than 0.2 above its second")


if __name__ == "__main__":
  main()
