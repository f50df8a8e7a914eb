"""Are SketchXAINet's stroke attacks flips of the model as the classify task feeds it?

  python benchmarks/stroke_attack_vector_check.py --workdir=workdirs/attack_qd16_tiny

The stroke_attack task attacks SketchXAINet through sketchjax/data/vector_tokens.py (its
normalisation and tokenisation written in JAX). This script rebuilds every attacked drawing
of the workdir's `adversarial.npz` on the host in canvas units (the strokes removed, the
stroke tails cut, the points moved by PGD), reads it as the classify task does
(`normalize_sketchxai`, `tokenize_batch` with the model's own tokeniser), and prints, per
attack, how many of the reported flips the host path confirms, whether the host
prediction of each original equals the attack's, and the mean margin (best other logit
minus the predicted class's; > 0 = flipped) of the originals and of PGD's moved drawings.
"""

import argparse
import json
import pathlib

import jax
import numpy as np

from sketchjax.data import tokenize
from sketchjax.methods import vector_attack
from sketchjax.sketch import normalize
from sketchjax.sketch.sketch import Sketch
from sketchjax.tasks import classify


def attacked_drawings(arrays: dict, i: int, radii: int) -> dict[str, list[np.ndarray]]:
  """Strokes (canvas units) of sketch i: the original and every attacked version."""
  xy, lens, stroke_of = arrays["xy"][i], arrays["lens"][i], arrays["segment_stroke"][i]
  strokes = [xy[k, :n] for k, n in enumerate(lens) if n > 0]
  out = {"original": strokes}
  for o, name in enumerate(vector_attack.VECTOR_STROKE_ORDERS):
    removed = arrays["strokes__removed_mask"][i, o]
    out[f"strokes/{name}"] = [s for k, s in enumerate(strokes) if not removed[k]]
  for o, name in enumerate(vector_attack.VECTOR_SEGMENT_ORDERS):
    removed, kept = arrays["segments__removed_mask"][i, o], []
    for k, stroke in enumerate(strokes):  # cut at the stroke's first removed segment
      gone = removed[stroke_of == k]
      cut = int(np.argmax(gone)) if gone.any() else len(gone)
      if cut > 0:
        kept.append(stroke[:cut + 1])
    out[f"segments/{name}"] = kept
  for r in range(radii):
    moved = xy + arrays["pgd__delta"][i, r]
    out[f"pgd/{r}"] = [moved[k, :n] for k, n in enumerate(lens) if n > 0]
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a stroke_attack workdir of SketchXAINet")
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  summary = json.loads((workdir / "summary.json").read_text())
  arrays = dict(np.load(workdir / "adversarial.npz"))
  model, params, _, trained = classify.load_trained(summary["model"]["path"])
  tokenizer = classify.tokenizer_config(trained)
  tokenizer = tokenize.TokenizerConfig(tokenizer.max_strokes, tokenizer.stroke_buckets,
                                       tokenizer.point_buckets)
  logits = jax.jit(lambda batch: model.apply({"params": params}, batch, train=False,
                                             logits_only=True)[0])
  radii = list(summary["pgd"])
  agree, confirmed, margins = [], {}, {}
  for i in range(len(arrays["lens"])):
    drawn = attacked_drawings(arrays, i, len(radii))
    names = list(drawn)
    sketches = [normalize.normalize_sketchxai(Sketch(tuple(drawn[n]))) for n in names]
    batch = tokenize.tokenize_batch(sketches, [0] * len(sketches), tokenizer)
    scores = np.asarray(logits({k: batch[k] for k in ("points", "stroke_len", "loc")}))
    host = dict(zip(names, np.argmax(scores, -1)))
    agree.append(host["original"] == arrays["prediction"][i])
    predicted = arrays["prediction"][i]
    others = np.delete(scores, predicted, axis=1).max(1) - scores[:, predicted]
    for name, margin in zip(names, others):
      if name == "original" or name.startswith("pgd/"):
        margins.setdefault(name, []).append(margin)
    for name in names[1:]:
      unit, index = name.split("/")
      column = (vector_attack.VECTOR_STROKE_ORDERS.index(index) if unit == "strokes" else
                vector_attack.VECTOR_SEGMENT_ORDERS.index(index) if unit == "segments"
                else int(index))
      if arrays[f"{unit}__success"][i, column]:
        confirmed.setdefault(name, []).append(host[name] != arrays["prediction"][i])
  print(f"{len(agree)} sketches; host and in-JAX predictions of the originals agree on "
        f"{100 * np.mean(agree):.1f}%")
  print("attack | reported flips | confirmed by the host path")
  for name, flips in confirmed.items():
    label = name if not name.startswith("pgd/") else f"pgd r={radii[int(name[4:])]}"
    print(f"{label} | {len(flips)} | {100 * np.mean(flips):.1f}%")
  print("mean margin: original " + f"{np.mean(margins['original']):.3f}; " + "; ".join(
      f"pgd r={radius} {np.mean(margins[f'pgd/{r}']):.3f}" for r, radius in enumerate(radii)))


if __name__ == "__main__":
  main()
