"""ZSE-SBIR trained as the official code on the Sketchy subset, zero-shot (Sketchy-25 unseen).

  python -m sketchjax.main --config=configs/zse_sketchy.py --workdir=workdirs/zse_zs25
  # Ours-Ret and Ours-RN (every pair, exact) of the trained model:
  python -m sketchjax.main --config=configs/zse_sketchy.py --config.mode=evaluate --workdir=workdirs/zse_zs25
  # its token correspondences, patch replacement and retrieve figures (workdirs/zse_zs25/explain):
  python -m sketchjax.main --config=configs/zse_sketchy.py --config.mode=explain --workdir=workdirs/zse_zs25

Default: the CPU size `zse_mobilenet` (ImageNet MobileNetV2 tokens, frozen body) at 128 px.
Variants, comma-separated: `vit_b16` (the official network at 224; give a ViT-B/16 file in
--config.model.pretrained), `small` (zse_small, random init), `zeroshot21`, `cross_pacs`,
`official_sampler` (the code's off-by-one), `figure` (the paper figure's conv stem and CA
convention), `vit_ret` (the ViT-Ret baseline: the same network trained by the triplet loss on
the self-attention [Ret] tokens only, loss.kind=ret_triplet), `smoke` (tests).
"""

from sketchjax.tasks import sbir_config


def get_config(arg: str | None = None):
  c = sbir_config.base_config()
  c.task = "zse"
  c.data.split = "zeroshot_sketchy25"
  c.data.preprocess = "zse"
  c.data.image_size = 128  # 224 faithful (zse_mobilenet needs a multiple of 64)
  c.data.official_off_by_one = False  # True: never draw a class's first file, as the code
  del c.loss, c.retrieve
  c.model = sbir_config.ml_collections.ConfigDict()
  c.model.variant = "zse_mobilenet"  # "zse_vit_b16" | "zse_small" | "zse_mobilenet"
  c.model.pretrained = str(sbir_config.MOBILENET_V2_TFLITE)  # "" = random init
  c.model.freeze_mobilenet = True
  c.model.dropout = 0.1
  c.model.conv_stem = "both"  # "sketch": the paper figure's
  c.model.ca_convention = "code"  # "figure"
  c.model.token_reshape = "view"  # "spatial" (ours)
  c.loss = sbir_config.ml_collections.ConfigDict()
  c.loss.margin = 1.0
  c.loss.kind = "zse"  # "zse" (2 triplet on CA [Ret] + 4 RN MSE) | "ret_triplet" (ViT-Ret)
  c.train.batch_size = 15  # items (60 images) a step, as the code
  c.train.eval_batch_size = 32
  c.train.num_steps = 600
  c.optimizer.learning_rate = 1e-5
  c.optimizer.weight_decay = 1e-2
  c.optimizer.schedule = "constant"
  c.eval.rn = False  # also Ours-RN at every training eval (every pair: slow)
  c.eval.evaluate_rn = True  # mode=evaluate: also Ours-RN (every pair)
  # Sketch queries a tile and photos a call: tile x chunk pairs scored at once. Calls whose
  # activations stay in cache run faster (WORKSPACE, session 22): 16 x 64 for zse_mobilenet's
  # 17 tokens at 128 px, 4 x 4 for ViT-B/16's 197 (`vit_b16`; ~1.45x the pairs/s of 20 x 20).
  c.eval.rn_tile = 16
  c.eval.rn_chunk = 64
  c.eval.fp16_scores = False  # rank by the code's fp16 sigmoid scores (parity)
  c.eval.ret_token = "sa"  # Ours-Ret by "sa" [Ret] tokens (one an item) | "ca" (one a pair)
  c.eval.rerank_k = 0  # > 0: also shortlist K by SA Ret, then RN (an approximation; ours)
  c.eval.checkpoint = "latest"  # mode=evaluate: "latest" | "best" (train.select_on's)
  c.train.select_on = "unseen"  # "unseen" (the code's: test classes, leakage) | "seen_heldout"
  c.train.heldout_fraction = 0.2  # seen_heldout: share of each seen class's photo ids held out
  c.train.select_metric = "map_all"  # eval metric the best step maximises (e.g. "rn_map_all")
  c.explain = sbir_config.ml_collections.ConfigDict()  # mode=explain (tasks/zse_explanations.py)
  c.explain.stats_queries = 50  # candidates: every (Nq // n)-th test sketch; statistics of top-1
  c.explain.num_queries = 4  # the first candidates drawn (patch replacement, retrieve figures)
  c.explain.pairs_per_kind = 2  # correspondence figure: the first hits and misses (top-1)
  c.explain.top_k = 5  # photos of a retrieve figure
  c.explain.lines = 6  # strongest matches drawn (and counted in the statistics)
  c.explain.similarity = "sa_cosine"  # patch replacement by "sa_cosine" | "ca_attention"
  c.explain.ranking = "ret"  # top photos by "ret" (SA [Ret] cosine) | "rn" (exact RN logit)
  for variant in filter(None, (arg or "").split(",")):
    if variant in sbir_config.SPLIT_VARIANTS:
      c.data.split = sbir_config.SPLIT_VARIANTS[variant]
    elif variant == "vit_b16":
      c.model.variant, c.data.image_size, c.model.pretrained = "zse_vit_b16", 224, ""
      c.eval.rn_tile = c.eval.rn_chunk = 4
    elif variant == "small":
      c.model.variant, c.data.image_size, c.model.pretrained = "zse_small", 224, ""
    elif variant == "official_sampler":
      c.data.official_off_by_one = True
    elif variant == "vit_ret":
      c.loss.kind = "ret_triplet"
    elif variant == "figure":
      c.model.conv_stem, c.model.ca_convention = "sketch", "figure"
    elif variant == "smoke":
      c.data.image_size = 64
      c.data.classes = "airplane,cat,dog,horse,zebra,cup,swan,harp"
      sbir_config.smoke_schedule(c)
      c.explain.stats_queries, c.explain.num_queries, c.explain.top_k = 6, 1, 3
    else:
      raise ValueError(f"unknown variant {variant!r}; expected a comma-separated list of "
                       "vit_b16, small, official_sampler, figure, vit_ret, smoke and splits "
                       f"{sorted(sbir_config.SPLIT_VARIANTS)}")
  return c
