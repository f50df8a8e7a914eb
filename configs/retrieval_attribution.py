"""Stroke attribution in QuickDraw-to-photo retrieval (issue 13, part 4).

Explains a model trained by the `sbir` task on the quickdraw_photo split (WORKSPACE.md,
"ImageNet init, trained", 0.1149 mAP@all): SLA of each test query against its top photo,
attribution order against the human drawing order (Spearman), early retrieval as strokes
are added in drawing, random and attribution (oracle) order.

  python -m sketchjax.main --config=configs/retrieval_attribution.py \
    --workdir=workdirs/retrieval_attribution \
    --config.sbir_workdir=workdirs/sbir_quickdraw_photo
  python -m sketchjax.main --config=configs/retrieval_attribution.py:smoke ...  (tests)

Numbers: WORKSPACE.md.
"""

import pathlib

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.task = "retrieval_attribution"
  c.seed = 0  # random orders
  c.sbir_workdir = str(REPO / "workdirs" / "sbir_quickdraw_photo")  # trained by the sbir task

  c.data = ml_collections.ConfigDict()
  c.data.dir = str(REPO.parent / "shared" / "data")  # the layout sbir_splits.DataDirs.under reads
  c.data.classes = ""  # comma-separated: keep only these classes ("" = the trained model's)

  c.queries = ml_collections.ConfigDict({"max": 0})  # 0 = every test query, else spread evenly

  # The soft render of a query: drawn at `size` px (the pipeline's load_image
  # vector_size) with supersample^2 samples a pixel, then resized as the pipeline does.
  c.render = ml_collections.ConfigDict({"size": 256, "supersample": 2})

  c.attribution = ml_collections.ConfigDict()
  c.attribution.steps = 16  # IG path points (completeness error in results.json)
  c.attribution.chunk = 0  # IG points differentiated at once (0 = all)
  c.attribution.batch = 16  # queries a jitted call
  c.attribution.sketches_at_once = 2  # of those, vmapped together (memory)
  c.attribution.buckets = True  # queries grouped by stroke count (False: one compilation)

  c.early = ml_collections.ConfigDict()
  c.early.fractions = tuple(round(0.1 * k, 1) for k in range(1, 11))
  c.early.max_strokes = 3  # also after 1..max_strokes strokes
  c.early.orders = ("drawing", "random", "sla_ig")

  # Noisy-stroke filter (issue 13, section 2, for retrieval): drop the strokes whose
  # attribution against the query's top photo is negative, against dropping as many at
  # random and the shortest first (methods/noisy_strokes.py); retrieval before and after.
  c.filter = ml_collections.ConfigDict({"methods": ("sla_ig", "occlusion")})

  c.figure = ml_collections.ConfigDict({"queries": 6, "top_k": 5})

  for variant in filter(None, (arg or "").split(",")):
    if variant == "smoke":
      c.queries.max = 6
      c.attribution.steps = 4
      c.attribution.batch = 4
      c.attribution.sketches_at_once = 2
      c.attribution.buckets = False
      c.render.size = 128
      c.render.supersample = 1
      c.early.fractions = (0.5, 1.0)
      c.early.max_strokes = 2
      c.figure.queries = 2
      c.figure.top_k = 3
    else:
      raise ValueError(f"unknown variant {variant!r}; expected 'smoke'")
  return c
