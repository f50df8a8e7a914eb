"""The raster CNN baseline (ResNet-18 style) on the same 344-class QuickDraw split.

Strokes are rasterised on the device by sketchjax.data.rasterize, so it reads
the same batches as SketchXAINet.

  python -m sketchjax.main --config=configs/raster_quickdraw.py \
      --workdir=workdirs/qd_raster --config.data.dir=../shared/data/quickdraw/simplified

Variants: `sketch_rnn14` (the 14 sketch-rnn classes, trained on sampled drawings as
configs/sketchxai_quickdraw.py:sketch_rnn14), `smoke` (tests).
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
  if arg == "smoke":
    classify_config.smoke(c)
    c.data.categories = "apple,cat,fish,house,star"
  elif arg == "sketch_rnn14":
    classify_config.sketch_rnn14(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'smoke' or 'sketch_rnn14'")
  return c
