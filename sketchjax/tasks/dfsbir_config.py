"""The configuration of the data-free SBIR task (CrossX-DFL), for configs/dfsbir_*.py.

Sized for this 2-core CPU by default (10 Sketchy classes, as the official
"reduced" 10-class prototype; 32 px estimators of width 32; MobileNetV2
students and teachers with ImageNet init at 64 px). The official sizes are the
`official` variant: 224-wide DCGAN estimators at 64 px, ResNet-34 everything,
batch 512, 500 estimator steps a period, 2000 periods.
"""

from __future__ import annotations

import ml_collections

from sketchjax.tasks import sbir_config

# The official "reduced" prototype has 10 Sketchy classes, not named; ours are
# 10 of the Sketchy subset that ImageNet MobileNetV2 (imagenet_classes.py) and
# doodleNet both know, for the fully data-free setting.
TEN_CLASSES = "airplane,bicycle,cat,chair,cup,dog,guitar,horse,teapot,umbrella"


def base_config() -> ml_collections.ConfigDict:
  c = sbir_config.base_config()  # data, eval, train keys as the sbir task
  c.task = "dfsbir"
  # "teacher": train one frozen network (teacher.kind) in workdir;
  # "train": CrossX-DFL from the teachers' workdirs; "evaluate_teachers": the
  # "classifier only" baseline (teacher probabilities as embeddings);
  # "evaluate_averaged": the "averaging weights" baseline (teachers' weights averaged).
  c.mode = "train"
  c.data.classes = TEN_CLASSES
  c.data.image_size = 64  # teachers' and students' input side (224 faithful)
  del c.model, c.loss, c.retrieve

  c.teacher = ml_collections.ConfigDict()
  c.teacher.kind = "photo"  # "photo" | "sketch" | "unified" | "modality"
  c.teacher.backbone = "mobilenet_v2"  # or "resnet34" (official, random init here)
  c.teacher.pretrained = str(sbir_config.MOBILENET_V2_TFLITE)  # "" = random init

  c.teachers = ml_collections.ConfigDict()
  c.teachers.photo = ""  # workdir of a photo (or unified) teacher
  c.teachers.sketch = ""  # workdir of a sketch (or the same unified) teacher
  c.teachers.modality = ""  # workdir of the modality network; "" = no L_modal
  # A photo teacher may also be ImageNet MobileNetV2 (its .tflite file), a sketch
  # teacher doodleNet (its folder): the fully data-free setting.
  c.teachers.imagenet_size = 128  # input side of the ImageNet teacher (224 faithful)

  c.estimator = ml_collections.ConfigDict()
  c.estimator.latent_dim = 128  # 1000 official
  c.estimator.width = 32  # 224 official
  c.estimator.output_size = 32  # 64 official

  c.students = ml_collections.ConfigDict()
  c.students.backbone = "mobilenet_v2"  # "resnet34" official
  c.students.pretrained = str(sbir_config.MOBILENET_V2_TFLITE)  # "" = random (official)
  c.students.embed_dim = 0  # 0: normalised backbone features (official); else a projection
  # ours, not the paper's, InfoNCE only, against the students' collapse: a projection head per
  # modality on the students' unit embeddings, for the contrastive loss (and the queues) only;
  # retrieval keeps the students' embeddings. 0 = off; projection_hidden 0 = one linear
  # layer, > 0 = Dense(hidden), ReLU, Dense(projection_dim)
  c.students.projection_dim = 0
  c.students.projection_hidden = 0
  c.students.official_normalization = False  # True: the code's thirds-of-buffer statistics

  c.dfl = ml_collections.ConfigDict()
  c.dfl.batch_size = 32  # pairs per estimator step (512 official)
  c.dfl.estimator_steps = 20  # per period (500 official)
  c.dfl.one_hot, c.dfl.info_entropy, c.dfl.activation = 3.0, 5.0, 0.1
  c.dfl.modality, c.dfl.alignment, c.dfl.adversarial = 1.0, 1.0, 1.0
  c.dfl.metric = "info_nce"  # "info_nce" (vanilla.py) | "proxy_anchor" (main.py)
  c.dfl.temperature = 0.07
  c.dfl.queue_size = 128
  c.dfl.official_queue = False  # True: updated only when queue_size % batch_size == 0
  c.dfl.estimator = "dcgan"  # "dcgan" (the paper's) | "inversion" (pixels optimised, ours)
  c.dfl.inversion_size = 32  # inversion: image side
  c.dfl.inversion_learning_rate = 0.05  # inversion: Adam on the pixels
  c.dfl.refine_steps = 0  # ours: adversarial refinement steps on the pairs (0 = off)
  c.dfl.refine_step_size = 0.02  # per step, in [-1, 1] pixel units
  # ours, not the paper's: class-conditional DCGAN estimators, each noise vector
  # aimed at an assigned class (L_oh to it), against the class collapse
  c.dfl.class_conditional = False
  # ours, not the paper's: InfoNCE without the queue keys of the pair's own teacher class
  # (the queues store each key's teacher label; the paper's InfoNCE: every key a negative)
  c.dfl.mask_same_class_negatives = False
  # ours, not the paper's, InfoNCE only, against the students' collapse: keys (positives
  # and queue) from momentum key encoders, MoCo's (0 = off: the students' own embeddings;
  # MoCo uses 0.999), and the batch's other pairs as negatives besides the queue's
  c.dfl.key_momentum = 0.0
  c.dfl.in_batch_negatives = False
  # ours, not the paper's, against the same collapse: supervised-contrastive InfoNCE (every key
  # of the pair's teacher class in the batch and the queue a positive; labelled queues), and
  # the students' step: global-norm clipping of their gradient (0 = off) and a linear warm-up
  # of their learning rate over the first periods (0 = off: the official cosine alone)
  c.dfl.class_positives = False
  c.dfl.student_grad_clip = 0.0
  c.dfl.student_warmup_periods = 0
  # The paper's baselines (spec 2.8; variants gaussian, unimodal, metadata, alternative):
  c.dfl.statistics = 0.0  # meta-data: weight of the teachers' feature-statistics loss
  c.dfl.gaussian_std = 0.5  # gaussian: pixel std before clipping to [-1, 1]
  c.dfl.alternative_classes = ""  # alternative: other classes ("" = the first few known)
  c.dfl.alternative_count = 20  # alternative: how many classes when not named
  c.dfl.alternative_per_class = 20  # alternative: photos and drawings a class
  # alternative: "other_classes" (the baseline's) | "training_split" (ours, a diagnosis,
  # not data-free: the split's own training photos and sketches of the retrieval
  # classes, the teachers' images, unpaired and paired by the teachers' labels)
  c.dfl.real_images = "other_classes"
  c.dfl.estimator_learning_rate = 1e-5  # SGD momentum 0.9, constant (official)
  c.dfl.student_learning_rate = 1e-5  # SGD momentum 0.9, cosine over the periods (official)

  c.train.batch_size = 8  # teacher mode: pairs a step
  c.train.num_steps = 100  # teacher mode: steps; train mode: periods
  c.train.log_every = 10
  c.train.eval_every = 50
  c.train.checkpoint_every = 50
  return c


def smoke(c: ml_collections.ConfigDict) -> None:
  c.data.image_size = 32
  c.data.classes = "airplane,cat,dog,horse,zebra"
  c.estimator.latent_dim, c.estimator.width, c.estimator.output_size = 16, 8, 16
  c.dfl.batch_size = 8
  c.dfl.estimator_steps = 2
  c.dfl.queue_size = 16
  sbir_config.smoke_schedule(c)
  c.eval.figure_queries = 2


def official(c: ml_collections.ConfigDict) -> None:
  """The official code's sizes (spec 2.2-2.6)."""
  c.data.image_size = 224
  c.data.preprocess = "dfsbir"
  c.teacher.backbone = c.students.backbone = "resnet34"
  c.teacher.pretrained = c.students.pretrained = ""
  c.estimator.latent_dim, c.estimator.width, c.estimator.output_size = 1000, 224, 64
  c.dfl.batch_size = 512
  c.dfl.estimator_steps = 500
  c.train.num_steps = 2000
  c.train.eval_every = c.train.checkpoint_every = 10


def external(c: ml_collections.ConfigDict) -> None:
  """Teachers nobody trained on our data: ImageNet MobileNetV2 and doodleNet."""
  c.teachers.photo = str(sbir_config.MOBILENET_V2_TFLITE)
  c.teachers.sketch = str(sbir_config.SHARED / "pretrained" / "doodlenet")
  c.teachers.modality = ""


def baseline(c: ml_collections.ConfigDict, name: str) -> None:
  """The paper's baselines (spec 2.8) at the run's budget; the same students,
  student step and schedule as CrossX-DFL, only the source of their pairs (or
  their loss) changed:
    gaussian     Gaussian images (no estimator), paired by their teachers' labels;
    unimodal     each student distilled from its own teacher, no L_align, no
                 L_modal, no pairing (the estimators still share the noise, which
                 without a cross-modal term changes nothing);
    metadata     the inversion estimator (pixels optimised per class) on the
                 teachers' feature statistics and the class target, without the
                 CrossX-DFL terms (L_a, L_modal, L_align, L_adv): DeepInversion;
    alternative  real Sketchy photos and QuickDraw drawings of other classes,
                 paired by their teachers' labels.
  """
  if name == "gaussian":
    c.dfl.estimator = "gaussian"
  elif name == "unimodal":
    c.dfl.metric = "distillation"
    c.dfl.alignment = c.dfl.modality = 0.0
  elif name == "metadata":
    c.dfl.estimator = "inversion"
    c.dfl.statistics = 1e-5  # the squared distances sum to ~1e6 on noise, ~4e5 on real photos
    c.dfl.activation = c.dfl.modality = c.dfl.alignment = c.dfl.adversarial = 0.0
  elif name == "alternative":
    c.dfl.estimator = "real"
  else:
    raise ValueError(f"unknown baseline {name!r}")


BASELINES = ("gaussian", "unimodal", "metadata", "alternative")
VARIANTS = ("smoke", "official", "external", "inversion", "refine", "proxy_anchor", "no_align",
            "no_modal", "no_adv", "official_queue", "official_normalization", "random_students",
            *BASELINES)


def apply_variants(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Comma-separated VARIANTS and split names (sbir_config.SPLIT_VARIANTS)."""
  for variant in filter(None, (arg or "").split(",")):
    if variant in sbir_config.SPLIT_VARIANTS:
      c.data.split = sbir_config.SPLIT_VARIANTS[variant]
    elif variant == "smoke":
      smoke(c)
    elif variant == "official":
      official(c)
    elif variant == "external":
      external(c)
    elif variant == "inversion":
      c.dfl.estimator = "inversion"
    elif variant == "refine":
      c.dfl.refine_steps = 3
    elif variant == "proxy_anchor":
      c.dfl.metric = "proxy_anchor"
    elif variant == "no_align":
      c.dfl.alignment = 0.0
    elif variant == "no_modal":
      c.dfl.modality = 0.0
    elif variant == "no_adv":
      c.dfl.adversarial = 0.0
    elif variant == "official_queue":
      c.dfl.official_queue = True
    elif variant == "official_normalization":
      c.students.official_normalization = True
    elif variant == "random_students":
      c.students.pretrained = ""
    elif variant in BASELINES:
      baseline(c, variant)
    else:
      raise ValueError(f"unknown variant {variant!r}; expected a comma-separated list of "
                       f"{sorted([*VARIANTS, *sbir_config.SPLIT_VARIANTS])}")
  return c
