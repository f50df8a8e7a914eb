"""Stroke Location Inversion (SketchXAI, spec A.3) of a trained SketchXAINet.

  python -m sketchjax.main --config=configs/sli.py --workdir=workdirs/sli \
      --config.checkpoint=workdirs/qd_tiny_masked [--config.mode=transfer]

Inverts the QuickDraw test drawings of `data.dir` (the 5 highest key_ids a
class of the project's folder) with the published constants: 100 SGD steps,
lr 10 -> 1e-5 cosine, steps no longer than 0.5. Each sketch runs `paths`
times (random starts in recovery, random target classes in transfer).
Cost: steps x paths forward+backward passes a sketch; limit the sketches with
--config.data.max_sketches.

Variants: `smoke` (a few steps and sketches, for tests; runs on a workdir of
configs/quickstart.py:smoke or configs/sketchxai_quickdraw.py:smoke).
"""

import pathlib

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.task = "sli"
  c.mode = "recovery"  # "recovery" | "transfer"
  c.checkpoint = ""  # a trained classify workdir (required)
  c.seed = 0
  c.paths = 3  # runs a sketch: random starts (recovery) or random targets (transfer)
  c.batch_size = 16  # sketches a jitted call (x paths runs), split over the devices
  c.devices = 0  # local devices a batch is split over (0 = all that divide batch_size)
  c.log_every = 5  # batches

  c.sli = ml_collections.ConfigDict()
  c.sli.steps = 100
  c.sli.lr = 10.0
  c.sli.lr_min = 1e-5
  c.sli.clip = 0.5  # longest step (canvas units)
  c.sli.init_std = 0.1  # recovery starts ~ N(0, init_std^2)
  c.sli.recovered_within = 0.1  # L2 distance counting a start point as recovered

  c.data = ml_collections.ConfigDict()
  c.data.source = "quickdraw"  # "quickdraw" (test drawings of data.dir) | "procedural"
  c.data.dir = str(REPO.parent / "shared/data/quickdraw/simplified")
  c.data.test_fraction = 0.25  # the classify split of ndjson files by key_id
  c.data.max_sketches = 0  # 0 = every test drawing
  c.data.on_bad_record = "raise"  # "raise" | "skip"

  c.figure = ml_collections.ConfigDict()
  c.figure.sketch = 0  # index of the drawn sketch among the inverted ones
  c.figure.path = 0
  c.figure.gif_fps = 10

  if arg == "smoke":
    c.sli.steps = 6
    c.batch_size = 4
    c.data.max_sketches = 6
    c.log_every = 1
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'smoke'")
  return c
