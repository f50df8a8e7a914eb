"""ZSE-SBIR at the official sizes: training step, [Ret] embedding and RN ranking, ours beside
the official loop's structure and the official PyTorch numbers.

  python benchmarks/zse_speed.py                       # ViT-B/16, 224 px, fp32 (official)
  python benchmarks/zse_speed.py --variant=zse_small --image_size=64 --repeats=1  # quick
  python benchmarks/zse_speed.py --notraining          # the embedding and ranking rows only
  python benchmarks/zse_speed.py --noranking           # the training step only

Random init (times do not depend on the weights), the network of configs/zse_sketchy.py:vit_b16,
each program jitted and warmed up once, medians of `--repeats`:
  training step   15 items = 60 images (s, p+, s-, p-), loss 2 triplet + 4 RN MSE, AdamW, in
                  `--microbatches` (5: 3 items = 12 images at a time; at once, 60 images of
                  ViT-B/16 need more than this machine's 24 GiB);
  [Ret] embedding SA forward of `--embed_batch` images to the [Ret] token (images/s);
  RN, cached      ours: every item's SA features and CA projections computed once
                  (zse_ranking.ItemFeatures), pairs scored in calls of `--tile` sketches x
                  `--chunk` photos (zse_ranking.pair_score_tile: the CA attention per
                  head over the whole call; pairs/s of the scoring alone). 4 x 4: a
                  call's activations stay in cache (20 x 20 pairs ran at ~0.7x the
                  pairs/s of 4 x 4 on an Intel Xeon, WORKSPACE session 22);
  RN, loop        the official validation loop's structure in JAX: one call = the SA of 20
                  photos recomputed (as the code does for every chunk of 20 sketches) and
                  their 400 pairs with 20 cached sketches (pairs/s);
  exact ranking   ours end to end on Nq x Ng test sets (Sketchy-25 of our subset, 625 x 625,
                  and of the paper, 15,229 x 17,101): every item encoded and projected once,
                  then every pair scored; derived from the measured rates:
                  pairs / ((Nq + Ng) / items_per_s + pairs / cached_pairs_per_s).
  product rate    one fp32 matrix product of the CA feed-forward's shape over a call's
                  pairs ([tile x chunk x tokens, D] @ [D, d_ff]), GFLOP/s: the rate the
                  scoring's dominant operation gets at this call size, so GFLOP/s / (GFLOP
                  a pair) is what the exact ranking would reach with every FLOP at it (a
                  bound for this call size only: the rate depends on the size, ~133
                  GFLOP/s at 20 x 20 pairs against ~265 at 4 x 4 on an Intel Xeon).
FLOPs a pair: XLA's cost analysis of the compiled programs (ours: the pair scoring plus the
per-item encoding spread over the pairs of a test set; loop: a call / 400). Memory: XLA's
buffer sizes of the training step program (arguments + outputs + temporaries), and the
process's peak resident set after it (ru_maxrss; the training step is timed first).

The official PyTorch code on this kind of machine with 2 threads (torch 2.13, random init,
medians, from the issue): training step 91.3 s (13.8 GiB peak); [Ret] embedding 3.98
images/s; RN scoring with the SA features cached 25.4 pairs/s; the official validation loop
16.7 pairs/s (RN) and 47.5 pairs/s (Ret). Ratios printed are ours / official speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import platform
import resource
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sketchjax.methods import zse_ranking
from sketchjax.tasks import zse
from sketchjax.training import microbatch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402

_VARIANT = flags.DEFINE_string("variant", "zse_vit_b16", "model.variant")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side (px).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls of each program (median).")
_TRAINING = flags.DEFINE_bool("training", True, "Time the training step (most of the run's "
                              "time at the official sizes); --notraining: the ranking rows only.")
_RANKING = flags.DEFINE_bool("ranking", True, "Time the embedding and ranking rows; "
                             "--noranking: the training step alone.")
_EMBED_BATCH = flags.DEFINE_integer("embed_batch", 20, "Images an embedding call.")
_TILE = flags.DEFINE_integer("tile", 4, "Sketches a call of the cached RN scoring "
                             "(configs/zse_sketchy.py:vit_b16's eval.rn_tile).")
_CHUNK = flags.DEFINE_integer("chunk", 4, "Photos a call of the cached RN scoring "
                              "(its eval.rn_chunk).")
_MICROBATCHES = flags.DEFINE_integer(
    "microbatches", 5, "Micro-batches of the training step (gradients accumulated inside the "
    "jitted step, as train.microbatches does; every loss term is a mean over items, so the "
    "gradient is the same). 1 = all 60 images at once: over 24 GiB at the official sizes.")

REPO = pathlib.Path(__file__).resolve().parents[1]
ITEMS = 15  # a training step's items (60 images)
LOOP = 20  # the official loop's sketches and photos a call
OFFICIAL = {"train_step_s": 91.3, "train_peak_gib": 13.8, "ret_images_per_s": 3.98,
            "rn_cached_pairs_per_s": 25.4, "rn_loop_pairs_per_s": 16.7,
            "ret_loop_pairs_per_s": 47.5}
TEST_SETS = {"Sketchy-25, our subset": (625, 625), "Sketchy-25, paper": (15229, 17101)}


def _config():
  spec = importlib.util.spec_from_file_location("zse_config", REPO / "configs" / "zse_sketchy.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("vit_b16")
  config.model.variant, config.data.image_size = _VARIANT.value, _IMAGE_SIZE.value
  config.model.pretrained = ""
  return config


def _flops(jitted, *args) -> float:
  return timing.compiled_flops(jitted.lower(*args).compile())


def _images(key: int, count: int, size: int) -> jax.Array:
  return jax.random.uniform(jax.random.key(key), (count, size, size, 3), minval=-1.0, maxval=1.0)


def bench_training(model, config, params) -> dict:
  objective = zse.zse_objective(model, config)
  optimizer = optax.adamw(config.optimizer.learning_rate,
                          weight_decay=config.optimizer.weight_decay)
  opt_state = optimizer.init(params)
  size = config.data.image_size

  def step(params, opt_state, batch, rng):
    (loss, _), grads = microbatch.value_and_grad(objective.loss, params, batch, rng,
                                                 num_microbatches=_MICROBATCHES.value,
                                                 num_shards=1)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def batch(i):
    names = ("sketch", "photo_positive", "sketch_negative", "photo_negative")
    return {n: _images(100 * i + j, ITEMS, size) for j, n in enumerate(names)}

  jitted = jax.jit(step)
  compiled = jitted.lower(params, opt_state, batch(0), jax.random.key(0)).compile()
  buffers = timing.compiled_buffers_gib(compiled)
  seconds = timing.median_seconds(compiled, lambda i: (params, opt_state, batch(i), jax.random.key(i)), _REPEATS.value)
  return {"train_step_s": seconds, "train_buffers_gib": buffers,
          "train_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def bench_ranking(model, params, size: int) -> dict:
  if not 1 <= _TILE.value <= LOOP:
    raise app.UsageError(f"--tile must be in [1, {LOOP}], got {_TILE.value}")
  ret = jax.jit(lambda p, x: model.apply({"params": p}, x, "sketch", method=model.encode)["ret"])
  batch = _EMBED_BATCH.value
  ret_s = timing.median_seconds(ret, lambda i: (params, _images(i, batch, size)), _REPEATS.value)
  sketches, photos = (zse_ranking.ItemFeatures(model, params, m) for m in ("sketch", "photo"))
  flat = {m: jax.jit(f.flat) for m, f in (("sketch", sketches), ("photo", photos))}
  item_s = timing.median_seconds(flat["photo"], lambda i: (params, _images(i, LOOP, size)), _REPEATS.value)
  sketch_rows = np.asarray(flat["sketch"](params, _images(7, LOOP, size)))
  photo_rows = np.asarray(flat["photo"](params, _images(8, _CHUNK.value, size)))
  score_tile = zse_ranking.pair_score_tile(model, params, sketch_rows, photo_rows, sketches,
                                           photos, tile=_TILE.value, chunk=_CHUNK.value)
  cached_s = timing.median_seconds(lambda _: score_tile(0, _TILE.value), lambda i: (i,),
                                   _REPEATS.value)
  cached_pairs = _TILE.value * _CHUNK.value
  scores = zse_ranking.pair_scorer(model, sketches, photos)

  def loop_call(params, sketch_rows, photo_images):  # the official structure, one call
    photo_rows = photos.flat(params, photo_images)
    return scores(params, jnp.repeat(sketch_rows, LOOP, axis=0),
                  jnp.tile(photo_rows, (LOOP, 1))).reshape(LOOP, LOOP)

  loop = jax.jit(loop_call)
  loop_s = timing.median_seconds(loop, lambda i: (params, jnp.asarray(sketch_rows),
                                            _images(50 + i, LOOP, size)), _REPEATS.value)
  tile_args = (params, jnp.asarray(sketch_rows[:_TILE.value]), jnp.asarray(photo_rows))
  flops = {"pair": _flops(zse_ranking.tile_scorer(model, sketches, photos), *tile_args)
                   / cached_pairs,
           "item": _flops(jax.jit(photos.flat), params, _images(0, 1, size)),
           "loop_call": _flops(loop, params, jnp.asarray(sketch_rows), _images(0, LOOP, size))}
  out = {"ret_images_per_s": batch / ret_s, "items_per_s": LOOP / item_s,
         "rn_cached_pairs_per_s": cached_pairs / cached_s,
         "rn_loop_pairs_per_s": LOOP * LOOP / loop_s,
         "flops_pair_scoring": flops["pair"], "flops_item": flops["item"],
         "flops_pair_loop": flops["loop_call"] / (LOOP * LOOP)}
  tokens = sketches.unflatten(jnp.asarray(sketch_rows[:1]))["tokens"].shape[1]
  out["product_gflops"] = timing.product_gflops(cached_pairs * tokens, model.hidden,
                                                model.ca_mlp_dim, _REPEATS.value)
  for name, (nq, ng) in TEST_SETS.items():
    pairs = nq * ng
    seconds = (nq + ng) / out["items_per_s"] + pairs / out["rn_cached_pairs_per_s"]
    out[f"exact_pairs_per_s[{name}]"] = pairs / seconds
    out[f"exact_flops_pair[{name}]"] = flops["pair"] + flops["item"] * (nq + ng) / pairs
  return out


def main(argv):
  del argv
  config = _config()
  model = zse.build_model(config)
  params = jax.jit(lambda k: model.init(k, _images(0, 1, config.data.image_size),
                                        _images(1, 1, config.data.image_size)))(
                                            jax.random.key(0))["params"]
  results = bench_training(model, config, params) if _TRAINING.value else {}
  if _RANKING.value:
    results.update(bench_ranking(model, params, config.data.image_size))
  official = _VARIANT.value == "zse_vit_b16" and _IMAGE_SIZE.value == 224
  print(f"ZSE-SBIR {_VARIANT.value} at {_IMAGE_SIZE.value} px, fp32, "
        f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()}, "
        f"{jax.device_count()} device(s)), medians of {_REPEATS.value}")

  def row(label, value, unit, key=None, faster="higher"):
    ref = OFFICIAL.get(key) if official and key else None
    ratio = ""
    if ref is not None:
      speedup = ref / value if faster == "lower" else value / ref
      ratio = f"   official {ref:8.2f} {unit}   ours {speedup:5.2f}x"
    print(f"  {label:44s} {value:10.3f} {unit}{ratio}")

  if _TRAINING.value:
    row(f"training step (15 items, 60 images; {_MICROBATCHES.value} micro-batches)",
        results["train_step_s"], "s", "train_step_s", "lower")
    row("  its buffers (XLA: args + outputs + temps)", results["train_buffers_gib"], "GiB")
    row("  peak resident set after it", results["train_peak_rss_gib"], "GiB", "train_peak_gib",
        "lower")
  if _RANKING.value:
    row("[Ret] embedding", results["ret_images_per_s"], "images/s", "ret_images_per_s")
    row("SA + CA projections of an item (ours, once)", results["items_per_s"], "items/s")
    row("RN scoring, features cached (ours)", results["rn_cached_pairs_per_s"], "pairs/s",
        "rn_cached_pairs_per_s")
    row("RN, official loop structure (in JAX)", results["rn_loop_pairs_per_s"], "pairs/s",
        "rn_loop_pairs_per_s")
    for name in TEST_SETS:
      row(f"exact RN ranking, {name}", results[f"exact_pairs_per_s[{name}]"], "pairs/s",
          "rn_loop_pairs_per_s")
    print(f"  GFLOP a pair: scoring {results['flops_pair_scoring'] / 1e9:.3f}, an item's "
          f"encoding {results['flops_item'] / 1e9:.3f}, official loop "
          f"{results['flops_pair_loop'] / 1e9:.3f}")
    for name in TEST_SETS:
      ours = results[f"exact_flops_pair[{name}]"]
      print(f"    exact ranking, {name}: {ours / 1e9:.3f} GFLOP a pair "
            f"({results['flops_pair_loop'] / ours:.2f}x fewer than the loop)")
    at_rate = results["product_gflops"] * 1e9 / results[f"exact_flops_pair[{name}]"]
    row("fp32 product rate (the CA FFN's shape)", results["product_gflops"], "GFLOP/s")
    row(f"  -> exact RN ranking at that rate, {name}", at_rate, "pairs/s",
        "rn_loop_pairs_per_s")
  print(json.dumps({"variant": _VARIANT.value, "image_size": _IMAGE_SIZE.value, **results}))


if __name__ == "__main__":
  app.run(main)
