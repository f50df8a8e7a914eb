"""The configuration of the data-dependent SBIR task, shared by configs/sbir_*.py.

`base_config()` holds every key; the files in configs/ pick the split and the
encoder and offer a `smoke` variant for tests. Defaults are sized for this
2-core CPU (96 px images, MobileNetV2 with ImageNet init); the faithful image
size of both papers is 224 (`--config.data.image_size=224`).
"""

from __future__ import annotations

import pathlib

import ml_collections

from sketchjax.training import trainer

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MOBILENET_V2_TFLITE = SHARED / "pretrained" / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite"


def base_config() -> ml_collections.ConfigDict:
  """Every key of the sbir task."""
  c = trainer.default_config()
  c.task = "sbir"
  # "train" | "evaluate" (a trained workdir on the split's test set) |
  # "evaluate_init" (the initial, e.g. ImageNet, encoders untrained: the floor) |
  # "embed" (a gallery folder's embeddings to gallery.npz) | "retrieve".
  c.mode = "train"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  # "category" | "zeroshot_sketchy25" | "zeroshot_sketchy21" | "finegrained_sketchy25" |
  # "cross_pacs" | "quickdraw_photo" (sketchjax/data/sbir_splits.py documents each).
  c.data.split = "category"
  c.data.classes = ""  # comma-separated: keep only these classes of the split ("" = all)
  # A folder in the layout of ../shared/data: sketchy/, tuberlin_pacs/,
  # quickdraw/simplified/ and quickdraw/extra/simplified/ (each split reads what it needs).
  c.data.dir = str(SHARED / "data")
  # "files": decode the image files; "tfds": build the split once as array_record
  # (sketchjax/data/tfds_sbir.py) under data.tfds_dir and train from it.
  c.data.source = "files"
  c.data.tfds_dir = ""  # "" = <workdir>/tfds
  c.data.preprocess = "mobilenet"  # "mobilenet" | "zse" | "dfsbir" (data/image_preprocess.py)
  c.data.image_size = 96  # 224 faithful
  c.data.on_bad_image = "raise"  # "raise" | "skip" (counted in the log)
  c.data.cache_images = True  # keep decoded, preprocessed training images in memory

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "mobilenet_v2"  # "mobilenet_v2" | "resnet18" | "resnet34" | "vit_b16" | "vit_small"
  c.model.embed_dim = 512
  c.model.shared = False  # one backbone for both modalities
  c.model.pretrained = str(MOBILENET_V2_TFLITE)  # local weights file; "" = random init

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "info_nce"  # "info_nce" | "triplet"
  c.loss.temperature = 0.07
  c.loss.margin = 0.2  # triplet margin on unit-norm embeddings (ZSE-SBIR: 1.0 on raw tokens)

  c.train.batch_size = 32  # pairs a step (64 images)
  c.train.eval_batch_size = 64
  c.train.num_steps = 600
  c.train.log_every = 20
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.optimizer.learning_rate = 1e-4
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "constant"

  c.eval = ml_collections.ConfigDict()
  c.eval.query_tile = 256
  c.eval.figure_queries = 6

  # mode=embed / retrieve
  c.retrieve = ml_collections.ConfigDict()
  c.retrieve.gallery_dir = ""  # folder of photos (`<class>/<file>` gives labels) or of files
  c.retrieve.gallery_npz = ""  # embeddings written by mode=embed; used instead of gallery_dir
  c.retrieve.query = ""  # a sketch image, or `<file.ndjson>#<line>` (1-based) for a drawing
  c.retrieve.top_k = 10
  return c


def smoke_schedule(c: ml_collections.ConfigDict) -> None:
  """4 steps of batch 8, logged every 2, checkpointed every 2, evaluated at the end."""
  c.train.batch_size = 8
  c.train.eval_batch_size = 16
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.eval_every = 4
  c.train.checkpoint_every = 2


def smoke(c: ml_collections.ConfigDict) -> None:
  """A few steps at a tiny size, for tests."""
  c.data.image_size = 32
  c.data.classes = "airplane,cat,dog,horse,zebra"
  c.model.embed_dim = 32
  smoke_schedule(c)
  c.eval.figure_queries = 2


SPLIT_VARIANTS = {"category": "category", "zeroshot25": "zeroshot_sketchy25",
                  "zeroshot21": "zeroshot_sketchy21", "finegrained": "finegrained_sketchy25",
                  "cross_pacs": "cross_pacs", "quickdraw_photo": "quickdraw_photo",
                  "pacs": "pacs"}


def apply_variants(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Comma-separated variants: a split name of SPLIT_VARIANTS; `random` (random
  init, BatchNorm on); `resnet18` / `resnet34`; `triplet`; `smoke`."""
  for variant in filter(None, (arg or "").split(",")):
    if variant in SPLIT_VARIANTS:
      c.data.split = SPLIT_VARIANTS[variant]
    elif variant == "random":
      c.model.pretrained = ""
    elif variant in ("resnet18", "resnet34"):
      c.model.backbone = variant
      c.model.pretrained = ""
    elif variant == "triplet":
      c.loss.name = "triplet"
    elif variant == "smoke":
      smoke(c)
    else:
      raise ValueError(f"unknown variant {variant!r}; expected a comma-separated list of "
                       f"{sorted([*SPLIT_VARIANTS, 'random', 'resnet18', 'resnet34', 'triplet', 'smoke'])}")
  return c
