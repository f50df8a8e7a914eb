"""Stroke-level attribution (SLA, P-SLA, occlusion, gates) of a sketch classifier on real drawings.

  python -m sketchjax.main --config=configs/attribution.py --workdir=/tmp/attr_doodlenet \
    --config.model.kind=doodlenet --config.model.path=../shared/pretrained/doodlenet \
    --config.data.dir=../shared/data/quickdraw/simplified
  python -m sketchjax.main --config=configs/attribution.py --workdir=/tmp/attr_tiny \
    --config.model.kind=checkpoint --config.model.path=workdirs/qd_tiny_masked \
    --config.data.dir=../shared/data/quickdraw/simplified
  python -m sketchjax.main --config=configs/attribution.py:smoke ...   (a few sketches, 8 IG steps)
"""

import ml_collections


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.task = "attribution"
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.kind = "doodlenet"  # "doodlenet" (TF.js folder) | "checkpoint" (classify workdir)
  c.model.path = ""

  c.data = ml_collections.ConfigDict()
  c.data.dir = ""  # folder of official QuickDraw <category>.ndjson (simplified) files
  c.data.categories = "all"  # or a comma-separated list
  c.data.test_fraction = 0.25  # key_id split (sketchjax/data/splits.py); the test part is used
  c.data.per_category = 1  # test drawings explained per category
  c.data.max_sketches = 400
  c.data.on_bad_record = "raise"  # "raise" | "skip"

  c.attribution = ml_collections.ConfigDict()
  c.attribution.target = "predicted"  # "predicted" | "label": the class whose logit is explained
  c.attribution.steps = 32  # integrated-gradients path points (midpoint rule)
  c.attribution.chunk = 8  # path points differentiated at once (memory; 0 = all)
  c.attribution.batch_size = 16  # sketches per jitted call
  c.attribution.sketches_at_once = 2  # of those, vmapped together (memory)

  c.raster = ml_collections.ConfigDict()
  c.raster.supersample = 4  # soft-rasteriser samples per pixel side

  c.figures = ml_collections.ConfigDict()
  c.figures.sketches = 8

  if arg == "smoke":
    c.data.per_category = 1
    c.data.max_sketches = 4
    c.attribution.steps = 8
    c.attribution.batch_size = 4
    c.attribution.sketches_at_once = 2
    c.raster.supersample = 2
    c.figures.sketches = 4
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'smoke'")
  return c
