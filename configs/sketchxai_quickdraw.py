"""SketchXAINet-Tiny on real QuickDraw strokes: the documented 344-class split.

The data is a folder of official `full/simplified` ndjson files given as
`--config.data.dir` (here ../shared/data/quickdraw/simplified: 344 classes x 20
drawings, split 15 train / 5 test a class by key_id, sketchjax/data/splits.py).
Built once into TFDS array_record files under <workdir>/tfds.

Variants (comma-separated after the colon):
  faithful     the official layout: 196 slots, padding attended (default)
  masked       attention masks padding and slots are bucketed to the batch
  no_shape, no_location, no_order   the paper's ablations (spec A.2)
  bitmap27     the 27 categories of ../shared/data/quickdraw/bitmap (405 train /
               135 test drawings), affine + stroke-dropout augmentation and a
               cosine schedule over 3,000 steps at batch 50: a classifier good
               enough to explain (SLI, attribution), comparable with doodleNet
  sketch_rnn14 the 14 classes of ../shared/pretrained/sketch_rnn, trained on 2,000
               drawings a class sampled from those generators (written first by
               configs/sketch_rnn_samples.py into workdirs/sketch_rnn_14, or
               --config.data.dir), affine augmentation, a cosine schedule over
               1,000 steps at batch 100: a classifier of real drawings good enough
               to explain (evaluate it on the real ndjson files of those classes)
  qd16, qd25   the real-drawing benchmark: the categories with >= 1,000 (16) / >= 400
               (25) unique drawings in ../shared/data/quickdraw/simplified and
               extra/simplified read together (duplicates dropped and counted), test =
               the highest 10% of key_ids a class (qd16: 30,764 train / 3,419 test;
               qd25: 35,802 / 3,978); the counts are in the run's log, and
               `python -m sketchjax.data.quickdraw_folders` prints them
  smoke        a tiny model on 5 classes for a few steps (tests)

  python -m sketchjax.main --config=configs/sketchxai_quickdraw.py:masked \
      --workdir=workdirs/qd_tiny --config.data.dir=../shared/data/quickdraw/simplified
  python -m sketchjax.main --config=configs/sketchxai_quickdraw.py:qd16,masked \
      --workdir=workdirs/qd16_tiny
"""

from sketchjax.tasks import classify_config

ABLATIONS = {"no_shape": "use_shape", "no_location": "use_location", "no_order": "use_order"}
BITMAP_CATEGORIES = (
    "airplane,alarm clock,apple,banana,bee,bicycle,bird,book,bowtie,candle,car,cat,clock,"
    "diamond,dog,eye,fish,flower,guitar,house,lollipop,octopus,rainbow,snowman,train,tree,"
    "umbrella")


def bitmap27(c):
  """Few-shot on 27 categories, regularised for 15 drawings a class."""
  c.data.categories = BITMAP_CATEGORIES
  c.data.augment.affine = True
  c.data.augment.stroke_dropout = 0.1
  c.train.batch_size = 50
  c.train.microbatches = 2
  c.train.num_steps = 3000
  c.train.eval_every = 500
  c.optimizer.schedule = "cosine"
  c.optimizer.learning_rate = 5e-4
  c.optimizer.warmup_steps = 100
  return c


def get_config(arg: str | None = None):
  c = classify_config.base_config()
  c.data.source = "quickdraw"
  c.data.format = "ndjson"
  c.data.categories = "folder"
  c.train.batch_size = 100
  c.train.eval_batch_size = 200
  c.train.microbatches = 5  # 5 x 20 sketches: faster and 1/3 of the memory on CPU
  c.train.num_steps = 2000
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.figure_sketches = 24
  variants = [v for v in (arg or "").split(",") if v]
  for variant in variants:
    if variant == "masked":
      classify_config.masked_bucketed(c)
    elif variant in ABLATIONS:
      c.model[ABLATIONS[variant]] = False
    elif variant == "bitmap27":
      bitmap27(c)
    elif variant == "sketch_rnn14":
      classify_config.sketch_rnn14(c)
    elif variant in classify_config.QD_MIN_DRAWINGS:
      classify_config.quickdraw_benchmark(c, variant)
    elif variant == "smoke":
      classify_config.smoke(c)
      c.data.categories = "apple,cat,fish,house,star"
    elif variant != "faithful":
      raise ValueError(f"unknown variant {variant!r}; expected faithful, masked, "
                       f"bitmap27, sketch_rnn14, qd16, qd25, smoke or one of "
                       f"{list(ABLATIONS)}")
  return c
