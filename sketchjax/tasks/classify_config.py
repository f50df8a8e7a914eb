"""The configuration of the stroke/raster classification task, shared by configs/.

`base_config()` holds every key with the faithful SketchXAINet-Tiny defaults
(spec A.2, A.5); each file in configs/ starts from it, changes what its
experiment needs and offers a `smoke` variant for tests.
"""

from __future__ import annotations

import pathlib

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[2]

# Slot buckets for the masked configuration: 95% of QuickDraw drawings have at
# most 13 strokes, so most batches of 100 fit in 16 or 32 slots.
STROKE_BUCKETS = (16, 32, 64, 128, 196)
POINT_BUCKETS = (16, 32, 64, 128, 256, 512)


def base_config() -> ml_collections.ConfigDict:
  """Every key of the task, with the official SketchXAINet-Tiny defaults."""
  c = ml_collections.ConfigDict()
  c.task = "classify"
  c.mode = "train"  # "train" | "evaluate" | "learning_curve"
  c.seed = 42

  c.data = ml_collections.ConfigDict()
  c.data.source = "procedural"  # "procedural" | "quickdraw"
  c.data.dir = ""  # folder of official QuickDraw files (ndjson or sketch-rnn npz),
  # or several ndjson folders "a,b" read as one without duplicates (quickdraw_folders.py)
  c.data.min_drawings = 0  # > 0: only the categories with this many unique drawings
  c.data.format = "ndjson"  # "ndjson" | "sketchrnn_npz"
  c.data.categories = "all"  # "all", "sketchxai30", or a comma-separated list
  c.data.test_fraction = 0.25  # ndjson split by key_id (sketchjax/data/splits.py)
  c.data.tfds_dir = ""  # where the TFDS builder writes; "" = <workdir>/tfds
  c.data.download = False  # fetch official files when data.dir lacks them
  c.data.eval_dir = ""  # mode=evaluate: folder of official files, class = file name
  c.data.unknown_classes = "refuse"  # mode=evaluate: "refuse" | "skip" (listed) files of
  # classes the model was not trained on
  c.data.on_bad_record = "raise"  # "raise" | "skip" (counted in the log)
  c.data.procedural_train_size = 2400
  c.data.procedural_test_size = 600
  c.data.procedural_classes = 12
  c.data.augment = ml_collections.ConfigDict({"affine": False, "stroke_dropout": 0.0})

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.max_strokes = 196
  c.tokenizer.bucket_strokes = False  # official: always 196 slots
  c.tokenizer.stroke_buckets = STROKE_BUCKETS
  c.tokenizer.point_buckets = POINT_BUCKETS
  # Ours: pack the strokes in rows as long as the batch's point bucket, not the
  # longest: the same model outputs, fewer sequential BiLSTM steps (the faithful
  # Tiny trains 1.02x, infers 1.40x the official code on AMD EPYC with it).
  c.tokenizer.bucket_packed_rows = True

  c.model = ml_collections.ConfigDict()
  c.model.kind = "sketchxainet"  # "sketchxainet" | "raster_cnn" | "doodlenet" (evaluate only)
  c.model.path = ""  # doodlenet: its TF.js folder, e.g. ../shared/pretrained/doodlenet
  c.model.size = "tiny"  # "tiny" | "base" | "custom" (then the fields below)
  c.model.hidden = 192
  c.model.num_layers = 12
  c.model.num_heads = 3
  c.model.mlp_dim = 768
  c.model.dropout = 0.1
  c.model.attention_dropout = 0.1
  c.model.use_shape = True
  c.model.use_location = True
  c.model.use_order = True
  c.model.mask_padding = False  # official: padding slots are attended
  c.model.dtype = "float32"
  c.model.image_size = 64  # raster_cnn only
  c.model.cnn_widths = (64, 128, 256, 512)  # raster_cnn only

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 500  # global, official (100 per GPU x 5)
  c.train.eval_batch_size = 500
  # Gradient accumulation inside the step: same update, 1/M of the activation
  # memory, and faster on CPU (sketchjax/training/microbatch.py).
  c.train.microbatches = 1
  c.train.num_steps = 40_000
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  c.train.keep_checkpoints = 3
  c.train.stop_on_nan = True
  c.train.figure_sketches = 16

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 3e-4
  c.optimizer.weight_decay = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.schedule = "sketchxai"  # "sketchxai" | "cosine" | "constant"
  c.optimizer.schedule_step_every = 2000
  c.optimizer.schedule_period = 20
  c.optimizer.warmup_steps = 0
  c.optimizer.grad_clip_norm = 0.0

  c.mesh = ml_collections.ConfigDict({"fsdp": 1})
  return c


def masked_bucketed(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Our faster variant: attention masks padding, slots bucketed to the batch.

  With padding masked the logits do not depend on the number of slots, so
  bucketing changes no result, only the cost.
  """
  c.model.mask_padding = True
  c.tokenizer.bucket_strokes = True
  return c


SHARED_QUICKDRAW = REPO.parent / "shared" / "data" / "quickdraw"
QD_FOLDERS = f"{SHARED_QUICKDRAW / 'simplified'},{SHARED_QUICKDRAW / 'extra' / 'simplified'}"
QD_MIN_DRAWINGS = {"qd16": 1000, "qd25": 400}


def quickdraw_benchmark(c: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """qd16 / qd25: the categories with >= 1,000 / >= 400 unique real drawings in
  ../shared/data/quickdraw/simplified and extra/simplified together (duplicates
  dropped), test = the highest 10% of key_ids a class. Counts go to the log;
  `python -m sketchjax.data.quickdraw_folders` prints them."""
  c.data.source = "quickdraw"
  c.data.format = "ndjson"
  c.data.dir = QD_FOLDERS
  c.data.categories = "folder"
  c.data.min_drawings = QD_MIN_DRAWINGS[name]
  c.data.test_fraction = 0.1
  return c


def sketch_rnn14(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The 14 sketch-rnn classes, 2,000 sampled drawings a class (configs/sketch_rnn_samples.py
  writes them to workdirs/sketch_rnn_14), affine augmentation, cosine schedule over 1,000
  steps: a classifier of real drawings (evaluate it on the real files of those classes)."""
  c.data.dir = str(REPO / "workdirs" / "sketch_rnn_14")
  c.data.format = "sketchrnn_npz"
  c.data.categories = "folder"
  c.data.augment.affine = True
  c.train.num_steps = 1000
  c.train.eval_every = 250
  c.train.checkpoint_every = 250
  c.optimizer.schedule = "cosine"
  c.optimizer.learning_rate = 5e-4
  c.optimizer.warmup_steps = 100
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A tiny model and a few steps, for end-to-end tests."""
  c.model.size = "custom"
  c.model.hidden = 32
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.mlp_dim = 64
  c.model.cnn_widths = (8, 16, 16, 32)
  c.model.image_size = 32
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  c.train.microbatches = 2
  c.train.num_steps = 6
  c.train.log_every = 2
  c.train.eval_every = 3
  c.train.checkpoint_every = 3
  c.train.figure_sketches = 4
  c.optimizer.schedule = "constant"
  c.optimizer.learning_rate = 1e-3
  c.data.procedural_train_size = 96
  c.data.procedural_test_size = 32
  return masked_bucketed(c)
