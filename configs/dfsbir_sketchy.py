"""Data-free SBIR (CrossX-DFL) on the Sketchy subset: teachers, then the estimators and students.

  # 1. the frozen networks (the only step that sees real data: the training split)
  for kind in photo sketch modality; do
    python -m sketchjax.main --config=configs/dfsbir_sketchy.py --config.mode=teacher \
      --config.teacher.kind=$kind --workdir=workdirs/dfsbir_teacher_$kind
  done
  # 2. CrossX-DFL: no photo-sketch pair, no real image, only the teachers
  python -m sketchjax.main --config=configs/dfsbir_sketchy.py --workdir=workdirs/dfsbir \
    --config.teachers.photo=workdirs/dfsbir_teacher_photo \
    --config.teachers.sketch=workdirs/dfsbir_teacher_sketch \
    --config.teachers.modality=workdirs/dfsbir_teacher_modality
  # the "classifier only" baseline
  python -m sketchjax.main --config=configs/dfsbir_sketchy.py --config.mode=evaluate_teachers ...

Variants (comma-separated): a split (category default, pacs, quickdraw_photo, cross_pacs),
`official` (the code's sizes), `external` (ImageNet MobileNetV2 and doodleNet as
teachers: nothing has seen our data), `inversion` (pixels optimised in place of
the DCGAN estimators), `refine` (adversarial refinement of the pairs),
`proxy_anchor` (main.py's student loss), the
ablations `no_align`, `no_modal`, `no_adv`, the paper's baselines `gaussian`, `unimodal`,
`metadata`, `alternative` (dfsbir_config.baseline), the parity switches `official_queue`,
`official_normalization`, `random_students`, and `smoke` (tests).
"""

from sketchjax.tasks import dfsbir_config


def get_config(arg: str | None = None):
  return dfsbir_config.apply_variants(dfsbir_config.base_config(), arg)
