"""Drawings sampled from the pretrained sketch-rnn generators, written as sketch-rnn npz files.

  python -m sketchjax.main --config=configs/sketch_rnn_samples.py --workdir=workdirs/sketch_rnn_14

writes `<category>.npz` for each of the 14 classes of ../shared/pretrained/
sketch_rnn (train / valid / test splits of sampled drawings), to train a
classifier on far more than the 20 real drawings a class the project has:

  python -m sketchjax.main --config=configs/sketchxai_quickdraw.py:masked,sketch_rnn14 \
      --workdir=workdirs/qd14_tiny

(the `sketch_rnn14` variant reads workdirs/sketch_rnn_14; another folder:
--config.data.dir).

Variants: `smoke` (2 classes, a few drawings, for tests).
"""

import pathlib

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.task = "sketch_rnn_samples"
  c.model_dir = str(REPO.parent / "shared/pretrained/sketch_rnn")
  c.classes = "all"  # or a comma-separated list: "bear,palm tree"
  c.seed = 0
  c.train = 2000  # drawings a class
  c.valid = 100
  c.test = 100
  c.temperature = 0.65  # the reference JavaScript's default
  c.magenta_start = False  # first input [0,0,1,0,0] (Magenta Python) instead of zeros (JS)
  c.simplify = True  # as the official full/simplified files (0..255, RDP 2.0)
  c.min_points = 5  # shorter samples are dropped
  c.chunk = 500  # drawings sampled in one jitted scan
  c.figure_per_class = 6

  if arg == "smoke":
    c.classes = "bear,palm_tree"
    c.train = 6
    c.valid = 2
    c.test = 2
    c.chunk = 8
    c.figure_per_class = 3
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'smoke'")
  return c
