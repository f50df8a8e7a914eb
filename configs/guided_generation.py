"""Attribution of sketch-rnn drawings, and attribution-guided generation (issue 13, section 3).

  python -m sketchjax.main --config=configs/guided_generation.py \
      --workdir=workdirs/guided_generation

Samples drawings of every class of ../shared/pretrained/sketch_rnn, attributes them
under doodleNet and under a raster CNN trained on sketch-rnn samples (SLA), and compares
attribution-guided generation with plain samples at the same calls, each direction
guided by one classifier and judged by the other. The raster CNN is trained by

  python -m sketchjax.main --config=configs/sketch_rnn_samples.py --workdir=workdirs/sketch_rnn_14
  python -m sketchjax.main --config=configs/raster_quickdraw.py:sketch_rnn14 \
      --workdir=workdirs/qd14_raster_gen --config.train.num_steps=300

Variants: `smoke` (2 classes, 2 drawings a class, 1 round, doodleNet guiding, for tests;
set `classifiers.raster` to a raster_cnn workdir of those classes).
"""

import pathlib

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.task = "guided_generation"
  c.seed = 0
  c.model_dir = str(REPO.parent / "shared/pretrained/sketch_rnn")  # <class>.gen.json files
  c.classes = "all"  # or a comma-separated list ("bear,palm tree")
  c.temperature = 0.65  # the reference JavaScript's default
  c.per_class = 12  # target drawings a class (each arm makes one from each)
  c.rounds = 3  # guided rounds after round 0; plain best-of-(rounds + 1)
  c.compute_matched = True  # also plain best-of-(rounds + 1)(ig_steps + 1)

  c.classifiers = ml_collections.ConfigDict()
  c.classifiers.doodlenet = str(REPO.parent / "shared/pretrained/doodlenet")  # TF.js folder
  c.classifiers.raster = str(REPO / "workdirs/qd14_raster_gen")  # raster_cnn workdir
  c.directions = "doodlenet>raster,raster>doodlenet"  # guide>judge, comma-separated

  c.ig_steps = 8  # SLA path points
  c.batch_size = 16  # drawings a jitted classifier call
  c.supersample = 4  # soft-rasteriser samples a pixel side
  c.figures = ml_collections.ConfigDict({"per_class": 2, "classes": 14})

  if arg == "smoke":
    c.classes = "bear,palm tree"
    c.directions = "doodlenet>raster"  # one direction: the other is the same code, swapped
    c.per_class = 2
    c.rounds = 1
    c.ig_steps = 2
    c.batch_size = 8
    c.supersample = 2
    c.figures.per_class = 1
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'smoke'")
  return c
