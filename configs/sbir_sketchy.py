"""The data-dependent SBIR baseline: photo and sketch encoders trained on real pairs.

MobileNetV2 encoders (ImageNet init from ../shared/pretrained/mobilenet_v2),
512-d unit embeddings, symmetric InfoNCE, on the Sketchy subset (25 sketches
and 25 photos a class; the full Sketchy has ~600 sketches and 100 photos a class).

  python -m sketchjax.main --config=configs/sbir_sketchy.py --workdir=workdirs/sbir_category

Variants, comma-separated: a split (`category` default, `zeroshot25`, `zeroshot21`,
`finegrained`, `cross_pacs`, `quickdraw_photo`), `random` (random init), `resnet18`,
`resnet34`, `triplet`, `smoke` (tests). E.g. `configs/sbir_sketchy.py:zeroshot25,random`.
Evaluate the untrained ImageNet encoders (the floor) with `--config.mode=evaluate_init`.
"""

from sketchjax.tasks import sbir_config


def get_config(arg: str | None = None):
  return sbir_config.apply_variants(sbir_config.base_config(), arg)
