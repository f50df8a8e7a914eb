"""Stroke-level adversarial attacks and noisy-stroke filtering of a sketch classifier (issue 13).

On held-out real QuickDraw drawings: remove whole strokes in SLA order, segments in
P-SLA order (against random, drawing order and shortest-first removal), move points by
PGD through the soft rasteriser within a radius (against random displacement), and drop
the strokes whose SLA for the drawing's class is negative (against dropping as many at
random or the shortest). A SketchXAINet workdir gets the same attacks on its coordinates
(sketchjax/methods/vector_attack.py): strokes in gate-IG SLA and occlusion order, stroke
tails in segment-gate IG order, PGD on the points through the normalisation.

  python -m sketchjax.main --config=configs/stroke_attack.py --workdir=workdirs/attack_doodlenet \
    --config.model.kind=doodlenet --config.model.path=../shared/pretrained/doodlenet \
    --config.data.dir=../shared/data/quickdraw/simplified
  python -m sketchjax.main --config=configs/stroke_attack.py --workdir=workdirs/attack_raster \
    --config.model.kind=checkpoint --config.model.path=workdirs/qd16_raster \
    --config.data.dir=workdirs/qd16_raster/tfds/merged-913977f37e7f/manual \
    --config.data.test_fraction=0.1   # the qd16 test split, from the files its training wrote
  python -m sketchjax.main --config=configs/stroke_attack.py --workdir=workdirs/attack_tiny \
    --config.model.kind=checkpoint --config.model.path=workdirs/qd16_tiny \
    --config.data.dir=workdirs/qd16_tiny/tfds/merged-913977f37e7f/manual \
    --config.data.test_fraction=0.1   # SketchXAINet: the same attacks on the coordinates
  python -m sketchjax.main --config=configs/stroke_attack.py:smoke ...   (3 sketches, few steps)

`--config.data.noise_strokes=1` adds a stroke of another class's drawing to each drawing
(known noise for the filter). Numbers: WORKSPACE.md.
"""

import ml_collections


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.task = "stroke_attack"
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.kind = "doodlenet"  # "doodlenet" (TF.js folder) | "checkpoint" (raster CNN or
  #                             SketchXAINet workdir of the classify task)
  c.model.path = ""

  c.data = ml_collections.ConfigDict()  # which drawings, as configs/attribution.py
  c.data.dir = ""  # folder of official QuickDraw <category>.ndjson (simplified) files
  c.data.categories = "all"  # or a comma-separated list
  c.data.test_fraction = 0.25  # key_id split (sketchjax/data/splits.py); the test part is used
  c.data.per_category = 1  # test drawings a category
  c.data.max_sketches = 400
  c.data.on_bad_record = "raise"  # "raise" | "skip"
  c.data.noise_strokes = 0  # strokes of other classes' drawings added to each (filter check)

  c.raster = ml_collections.ConfigDict({"supersample": 4})  # soft-rasteriser samples a pixel side

  c.attack = ml_collections.ConfigDict()
  c.attack.radii = (2.0, 4.0, 8.0, 16.0, 32.0)  # PGD displacement budgets, canvas units
  c.attack.settings = ml_collections.ConfigDict(
      {"ig_steps": 32, "chunk": 8, "pgd_steps": 20, "step_fraction": 0.25})  # AttackSettings
  c.attack.batch_size = 16  # sketches a jitted call (sorted by size, so shapes repeat)
  c.attack.sketches_at_once = 4  # of those, vmapped together (memory)
  c.attack.dot_length = 16.0  # SketchXAINet: ink of a one-point stroke, canvas units (the
  #                             official bitmaps' line width); raster models use their line

  c.figures = ml_collections.ConfigDict({"sketches": 6})

  if arg == "smoke":
    c.data.max_sketches = 3
    c.attack.radii = (4.0, 16.0)
    c.attack.settings.update({"ig_steps": 4, "chunk": 4, "pgd_steps": 3})
    c.attack.batch_size = 4
    c.attack.sketches_at_once = 4
    c.raster.supersample = 2
    c.figures.sketches = 3
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'smoke'")
  return c
