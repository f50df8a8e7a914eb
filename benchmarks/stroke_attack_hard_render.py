"""Do the stroke attacks survive the model's own (non-differentiable) renderer?

  python benchmarks/stroke_attack_hard_render.py --workdir=workdirs/attack_qd16_doodlenet

The stroke_attack task finds its attacks through the soft rasteriser. This script redraws
every attacked sketch of the workdir's `adversarial.npz` (each kept segment, or every
segment moved by PGD) with the renderer the model was trained on: doodleNet's official
bitmaps (anti-aliased lines with round caps, drawn here with PIL at 4 x 4 samples a
pixel), or the raster CNN's hard binary rasteriser (sketchjax/data/rasterize.py), and
prints, per attack, how many soft successes still change the model's prediction of the
hard-drawn original (the transfer rate), and how often the hard and soft predictions of
the originals agree.
"""

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from sketchjax.data import rasterize
from sketchjax.data import soft_rasterize as sr
from sketchjax.methods import raster_attack
from sketchjax.tasks import classify
from sketchjax.tasks import stroke_attack as task

_SUPERSAMPLE = 4


def pil_segments(a: np.ndarray, b: np.ndarray, settings: sr.RasterSettings) -> np.ndarray:
  """Segments float[N, 2] pixel ends -> float32[size, size] anti-aliased ink (1 = ink), drawn
  as the official bitmaps are (round caps and joins)."""
  size, scale = settings.size, _SUPERSAMPLE
  radius = settings.line_width * scale / 2
  canvas = Image.new("L", (size * scale,) * 2, 0)
  draw = ImageDraw.Draw(canvas)
  for start, end in zip(a * scale, b * scale):
    draw.line([tuple(start), tuple(end)], fill=255, width=max(1, round(2 * radius)))
    for x, y in (start, end):
      draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
  return np.asarray(canvas.reduce(scale), np.float32) / 255.0


def binary_segments(a: np.ndarray, b: np.ndarray, size: int, line_width: int,
                    rows: int) -> np.ndarray:
  """The raster CNN's training rasteriser, each segment a two-point polyline (padded to
  `rows` polylines, so that one shape compiles)."""
  xy = np.zeros((rows, 2, 2), np.float32)
  xy[:len(a)] = np.stack([a, b], 1) / (size / 2) - 1.0  # soft-rasteriser pixels -> [-1, 1]
  lens = (np.arange(rows) < len(a)).astype(np.int32) * 2
  return np.asarray(_binary(jnp.asarray(xy), jnp.asarray(lens), size, line_width))


_binary = jax.jit(lambda xy, lens, size, line_width: rasterize.rasterize_polylines(
    xy, lens, size=size, line_width=line_width), static_argnums=(2, 3))


def versions(arrays: dict, i: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Segments (a, b) of sketch i: the original and every attacked version."""
  xy, lens = arrays["xy"][i], arrays["lens"][i]
  n = arrays["segments__removed_mask"].shape[-1]
  segments = sr.polyline_segments(jnp.asarray(xy), jnp.asarray(lens), n)
  a, b, stroke, valid = (np.asarray(x) for x in segments)
  out = {"original": (a[valid], b[valid])}
  for o, name in enumerate(raster_attack.STROKE_ORDERS):
    keep = valid & ~arrays["strokes__removed_mask"][i, o][stroke]
    out[f"strokes/{name}"] = (a[keep], b[keep])
  for o, name in enumerate(raster_attack.SEGMENT_ORDERS):
    keep = valid & ~arrays["segments__removed_mask"][i, o]
    out[f"segments/{name}"] = (a[keep], b[keep])
  for k in range(arrays["pgd__delta"].shape[1]):
    moved = sr.polyline_segments(jnp.asarray(xy + arrays["pgd__delta"][i, k]), jnp.asarray(lens), n)
    out[f"pgd/{k}"] = (np.asarray(moved.a)[valid], np.asarray(moved.b)[valid])
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a stroke_attack workdir")
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  summary = json.loads((workdir / "summary.json").read_text())
  arrays = dict(np.load(workdir / "adversarial.npz"))
  config = ml_collections.ConfigDict({"model": summary["model"], "raster": {"supersample": 4}})
  model = task.load_raster_model(config)
  if summary["model"]["kind"] == "doodlenet":
    render = lambda a, b: pil_segments(a, b, model.settings)
  else:
    trained = classify.load_trained(summary["model"]["path"])[0]
    rows = arrays["segments__removed_mask"].shape[-1]
    render = lambda a, b: binary_segments(a, b, trained.image_size, trained.line_width, rows)
  logits = jax.jit(jax.vmap(model.image_logits))
  radii = list(summary["pgd"])
  attacks = ([f"strokes/{o}" for o in raster_attack.STROKE_ORDERS]
             + [f"segments/{o}" for o in raster_attack.SEGMENT_ORDERS]
             + [f"pgd/{k}" for k in range(len(radii))])
  soft_success = {name: [] for name in attacks}
  hard_flip = {name: [] for name in attacks}
  agree = []
  for i in range(len(arrays["lens"])):
    drawn = versions(arrays, i)
    names = list(drawn)
    predicted = np.asarray(jnp.argmax(logits(jnp.asarray(
        np.stack([render(*drawn[n]) for n in names]))), -1))
    hard = dict(zip(names, predicted))
    agree.append(hard["original"] == arrays["prediction"][i])
    for name in attacks:
      unit, index = name.split("/")
      column = raster_attack.STROKE_ORDERS.index(index) if unit == "strokes" else (
          raster_attack.SEGMENT_ORDERS.index(index) if unit == "segments" else int(index))
      soft_success[name].append(bool(arrays[f"{unit}__success"][i, column]))
      hard_flip[name].append(hard[name] != hard["original"])
  print(f"{len(agree)} sketches; hard and soft predictions of the originals agree on "
        f"{100 * np.mean(agree):.1f}%")
  print("attack | soft success | of those, still flipped when hard-drawn | hard-drawn flips")
  for name in attacks:
    soft, flip = np.array(soft_success[name]), np.array(hard_flip[name])
    label = name if not name.startswith("pgd/") else f"pgd r={radii[int(name[4:])]}"
    kept = f"{100 * flip[soft].mean():.1f}%" if soft.any() else "-"
    print(f"{label} | {100 * soft.mean():.1f}% | {kept} | {100 * flip.mean():.1f}%")


if __name__ == "__main__":
  main()
