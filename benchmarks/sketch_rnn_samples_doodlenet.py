"""doodleNet top-1 on sketch-rnn samples and on real drawings of the same classes.

  python benchmarks/sketch_rnn_samples_doodlenet.py --samples=workdirs/sketch_rnn_14 \
      --real=workdirs/qd14_real

Renders each drawing with the official-settings soft rasteriser and counts how often the
pretrained doodleNet (345 classes, trained elsewhere) names its file's category: a check
that the sampled training drawings look like their class.
"""

import argparse
import pathlib

import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.data.formats import folder
from sketchjax.models.doodlenet import load_doodlenet

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


def top1(model, variables, names, folder_path, split, per_class):
  """(top-1 over all drawings, count, {category: top-1})."""
  hits, total, per = 0, 0, {}
  for category, path in folder.list_category_files(folder_path).items():
    drawings = folder.read_drawings(path, split=split)[:per_class]
    images = sr.render_official([d.sketch.strokes for d in drawings])
    predicted = np.argmax(model.apply(variables, images[..., None])[0], -1)
    right = sum(names[p] == category for p in predicted)
    hits, total, per[category] = hits + right, total + len(drawings), right / len(drawings)
  return hits / total, total, per


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", required=True, help="folder of sampled <category>.npz")
  parser.add_argument("--real", required=True, help="folder of real <category>.ndjson")
  parser.add_argument("--per_class", type=int, default=100)
  args = parser.parse_args()
  model, variables, names = load_doodlenet(SHARED / "pretrained" / "doodlenet")
  for what, path, split in (("samples (test split)", args.samples, "test"),
                            ("real drawings", args.real, "train")):
    accuracy, count, per = top1(model, variables, names, path, split, args.per_class)
    print(f"{what}: top-1 {accuracy:.1%} of {count}; "
          + ", ".join(f"{c} {a:.0%}" for c, a in per.items()))


if __name__ == "__main__":
  main()
