"""The raster CNN baseline (ResNet-18 style) on the same 344-class QuickDraw split.

Strokes are rasterised on the device by sketchjax.data.rasterize, so it reads
the same batches as SketchXAINet.

  python -m sketchjax.main --config=configs/raster_quickdraw.py \
      --workdir=workdirs/qd_raster --config.data.dir=../shared/data/quickdraw/simplified

Variants (comma-separated): `sketch_rnn14` (the 14 sketch-rnn classes, trained on
sampled drawings as configs/sketchxai_quickdraw.py:sketch_rnn14), `qd16` / `qd25` (the
real-drawing benchmark of configs/sketchxai_quickdraw.py), `smoke` (tests).
"""

from sketchjax.tasks import classify_config


def get_config(arg: str | None = None):
  c = classify_config.masked_bucketed(classify_config.base_config())
  c.data.source = "quickdraw"
  c.data.format = "ndjson"
  c.data.categories = "folder"
  c.model.kind = "raster_cnn"
  c.model.image_size = 64
  c.model.cnn_widths = (32, 64, 128, 256)
  c.train.batch_size = 100
  c.train.eval_batch_size = 200
  c.train.num_steps = 2000
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.figure_sketches = 24
  for variant in [v for v in (arg or "").split(",") if v]:
    if variant == "smoke":
      classify_config.smoke(c)
      c.data.categories = "apple,cat,fish,house,star"
    elif variant == "sketch_rnn14":
      classify_config.sketch_rnn14(c)
    elif variant in classify_config.QD_MIN_DRAWINGS:
      classify_config.quickdraw_benchmark(c, variant)
    else:
      raise ValueError(f"unknown variant {variant!r}; expected smoke, sketch_rnn14, qd16 "
                       "or qd25")
  return c
