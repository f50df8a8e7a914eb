"""Stroke Location Inversion throughput: batched vs one sketch at a time.

  python benchmarks/sli_throughput.py --data_dir=../shared/data/quickdraw/simplified

Prints, side by side, SLI sketches/s (one inversion of `--steps` steps a
sketch, one path) for random-init SketchXAINet-Tiny-30 (speed does not depend
on the weights) in two layouts:
  faithful  196 stroke slots, padding attended (the official model);
  masked    attention masks padding; the sketches are sorted by stroke count
            and each batch has the smallest slot bucket that holds it (as
            the SLI task runs them);
each both batched (`vmap` over `--batch` sketches in one jitted `lax.scan`)
and one sketch at a time (a Python loop over sketches calling the jitted
single-sketch inversion, as the official code does with batch size 1), with
the official PyTorch code measured on the same kind of CPU (`OFFICIAL_SECONDS`,
2 threads, medians, chosen by the CPU model name the benchmark prints; runs vary
by up to 25%; without a set for this CPU the official columns stay empty and it
says so) and the ratios. `--sizes=tiny,base` adds
Base-30. Both run as the SLI task does: the shape embeddings once a batch (BiLSTM
over the packed real strokes), then the inversion. Every shape is compiled
(and run once) before the clock starts; the drawings are real QuickDraw
drawings in a fixed shuffled order.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_reference  # noqa: E402

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/quickdraw/simplified",
                                "Folder of official simplified ndjson files.")
_BATCH = flags.DEFINE_integer("batch", 16, "Sketches a batched call.")
_BATCHES = flags.DEFINE_integer("batches", 2, "Timed batched calls per layout.")
_SINGLE = flags.DEFINE_integer("single", 3, "Sketches timed one at a time per layout.")
_STEPS = flags.DEFINE_integer("steps", 100, "SLI steps (100 official).")
_SIZES = flags.DEFINE_list("sizes", ["tiny"], "Model sizes: tiny, base.")
_LAYOUTS = flags.DEFINE_list("layouts", ["faithful", "masked"], "Layouts: faithful, masked.")

NUM_CLASSES = 30
# The official code (inversion/main_inversion.py, batch size 1, 100 steps), 2
# threads: seconds a sketch, by the kind of CPU it was measured on (cpu_reference.py).
OFFICIAL_SECONDS = {"Intel Xeon": {"tiny": 5.6, "base": 48.0},
                    "AMD EPYC": {"tiny": 7.90}}  # issue 14, section 4 (2026-12-02)


def _sketches(data_dir: str, count: int):
  """`count` normalised (sketch, label) pairs of real drawings, fixed shuffled order."""
  import numpy as np
  from sketchjax.data import pipeline
  from sketchjax.data.formats import folder
  from sketchjax.sketch.sketch import to_stroke3

  records = []
  for label, path in enumerate(folder.list_category_files(data_dir).values()):
    records += [{"stroke3": to_stroke3(d.sketch), "label": label % NUM_CLASSES}
                for d in folder.read_drawings(path)]
  order = np.random.default_rng(0).permutation(len(records))[:count]
  examples = [pipeline.decode(records[i]) for i in order]
  return [(e.sketch, e.label) for e in examples]


def _tokenize(pairs, masked: bool) -> dict:
  from sketchjax.data import tokenize
  from sketchjax.tasks.classify_config import POINT_BUCKETS, STROKE_BUCKETS
  config = tokenize.TokenizerConfig(stroke_buckets=STROKE_BUCKETS if masked else None,
                                    point_buckets=POINT_BUCKETS)
  return tokenize.tokenize_batch([s for s, _ in pairs], [l for _, l in pairs], config)


def measure(size: str, layout: str, pairs_batched, pairs_single) -> dict:
  """sketches/s of batched and one-at-a-time SLI for one model and layout."""
  import jax
  from sketchjax.methods import sli
  from sketchjax.models import sketchxainet

  masked = layout == "masked"
  make = sketchxainet.tiny if size == "tiny" else sketchxainet.base
  model = make(NUM_CLASSES, mask_padding=masked)
  if masked:  # similar stroke counts share a batch (as the SLI task orders them)
    pairs_batched = sorted(pairs_batched, key=lambda p: p[0].num_strokes)
  batches = [_tokenize(pairs_batched[i:i + _BATCH.value], masked)
             for i in range(0, len(pairs_batched), _BATCH.value)]
  singles = [_tokenize([p], masked) for p in pairs_single]
  params = jax.jit(lambda b: model.init({"params": jax.random.key(0)}, b, train=False)
                   ["params"])(singles[0])
  embed = jax.jit(lambda p, b: sketchxainet.with_shape_embeddings(model, p, b))
  inverter = sli.jit_inverter(lambda p, b: model.apply({"params": p}, b, train=False,
                                                          logits_only=True)[0],
                              sli.SLIConfig(steps=_STEPS.value))

  def invert(batch):  # as the SLI task: shape embeddings once, then the inversion
    embedded = embed(params, batch)
    init = sli.recovery_init(jax.random.key(1), embedded, 1)
    return inverter(params, embedded, embedded["label"], init)

  def timed(groups) -> float:
    for batch in groups:  # compiles every shape before the clock starts
      jax.block_until_ready(invert(batch))
    start = time.perf_counter()
    for batch in groups:
      jax.block_until_ready(invert(batch))
    return time.perf_counter() - start

  batched_s = timed(batches)
  single_s = timed(singles)
  slots = sorted({b["stroke_len"].shape[1] for b in batches})
  return {"batched": len(pairs_batched) / batched_s, "single": len(pairs_single) / single_s,
          "slots": slots, "single_slots": sorted({b["stroke_len"].shape[1] for b in singles})}


def main(argv):
  del argv
  import jax
  model_name = cpu_reference.cpu_model()
  _, official_seconds = cpu_reference.reference_set(OFFICIAL_SECONDS, model_name)
  official_seconds = official_seconds or {}
  print(cpu_reference.describe(OFFICIAL_SECONDS, model_name))
  pairs = _sketches(_DATA_DIR.value, _BATCH.value * _BATCHES.value)
  print(f"SLI {_STEPS.value} steps, 1 path a sketch, random-init SketchXAINet-*-{NUM_CLASSES}; "
        f"batched: {len(pairs)} sketches in batches of {_BATCH.value}; one at a time: "
        f"{_SINGLE.value} sketches; {os.cpu_count()} cores, {jax.devices()[0].platform}, "
        f"JAX {jax.__version__}", flush=True)
  print(f"\n{'model':5} {'layout':8} | {'batched sk/s':>12} {'one-by-one sk/s':>15} "
        f"{'batched/one':>11} | {'official sk/s':>13} {'batched/off':>11} {'one/off':>7} | slots")
  for size in _SIZES.value:
    seconds = official_seconds.get(size)
    official = 1.0 / seconds * 100 / _STEPS.value if seconds else None
    for layout in _LAYOUTS.value:
      r = measure(size, layout, pairs, pairs[:_SINGLE.value])
      against = (f"{official:13.3f} {r['batched'] / official:10.2f}x "
                 f"{r['single'] / official:6.2f}x" if official else f"{'-':>13} {'-':>11} {'-':>7}")
      print(f"{size:5} {layout:8} | {r['batched']:12.3f} {r['single']:15.3f} "
            f"{r['batched'] / r['single']:10.2f}x | {against} | "
            f"batched {r['slots']}, one-by-one {r['single_slots']}", flush=True)
  if _STEPS.value != 100:
    print(f"(official sketches/s scaled from 100 to {_STEPS.value} steps)")


if __name__ == "__main__":
  app.run(main)
