"""SketchXAINet throughput and peak memory on the real QuickDraw drawings.

  python benchmarks/sketchxainet_throughput.py --data_dir=../shared/data/quickdraw/simplified

Prints, side by side, training (AdamW step) and inference sketches/s and peak
resident memory of SketchXAINet-Tiny-345 at batch 100 and 32 in two layouts:
  faithful  196 stroke slots, padding attended (the official model);
  masked    attention masks padding, slots bucketed to the batch.
In both the BiLSTM runs on the packed real strokes only, as the official code
does with pack_padded_sequence.
plus Base-345 inference at batch 32, the FLOP/s each reaches (XLA's cost
analysis of the compiled step) against the machine's measured float32 matmul
rate, and each figure's ratio to the official PyTorch code measured on the same
kind of CPU (2 threads, medians; `OFFICIAL` below, chosen by the CPU model name
that the benchmark prints; without a set for this CPU the official columns stay
empty and it says so) and masked / faithful.

Both steps run in micro-batches of >= `--microbatch` sketches inside the
jitted step (training accumulates gradients, inference concatenates logits:
the same results; sketchjax/training/microbatch.py): on this CPU it is both
faster and several times smaller.
Every configuration runs in its own subprocess, so its peak memory (ru_maxrss)
is its own. The drawings are tokenised in a fixed shuffled order; every batch
shape is compiled before the clock starts, and the figure is the median over
`--batches` batches.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_reference  # noqa: E402
import timing  # noqa: E402

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/quickdraw/simplified",
                                "Folder of official simplified ndjson files.")
_BATCHES = flags.DEFINE_integer("batches", 6, "Timed batches per configuration.")
_ONLY = flags.DEFINE_string("only", "", "Run one configuration 'size:layout:mode:batch' "
                            "in this process and print its JSON (used by the driver).")
_SKIP_BASE = flags.DEFINE_bool("skip_base", False, "Skip Base-345 inference (slow on CPU).")
_BUCKET_ROWS = flags.DEFINE_bool("bucket_packed_rows", True, "Pack the strokes in rows as long "
                                  "as the batch's point bucket (TokenizerConfig."
                                  "bucket_packed_rows, the classify task's default), not "
                                  "always the longest bucket.")
_MICROBATCH = flags.DEFINE_integer("microbatch", 16, "Steps run in micro-batches of at least "
                                   "this many sketches (1 = off).")

NUM_CLASSES = 345
# The official PyTorch code, 2 threads (sketches/s, peak GiB), by the kind of CPU
# it was measured on (a substring of the CPU model name; cpu_reference.py).
OFFICIAL = {
    "Intel Xeon": {("tiny", "train", 100): (11.8, 8.4), ("tiny", "train", 32): (10.6, None),
                   ("tiny", "infer", 100): (36.7, None), ("base", "infer", 32): (5.2, None)},
    # issue 14, section 4: measured side by side with sketchjax on 2026-12-02.
    "AMD EPYC": {("tiny", "train", 100): (9.79, 8.50), ("tiny", "infer", 100): (31.42, None)},
}
CONFIGS = [(size, layout, mode, batch)
           for size, mode, batch in [("tiny", "train", 100), ("tiny", "train", 32),
                                     ("tiny", "infer", 100), ("tiny", "infer", 32),
                                     ("base", "infer", 32)]
           for layout in ("faithful", "masked")]


def microbatches(batch_size: int, smallest: int) -> int:
  """The most micro-batches M dividing the batch with B / M >= smallest."""
  return max(m for m in range(1, batch_size + 1)
             if batch_size % m == 0 and batch_size // m >= min(smallest, batch_size))


def _batches(data_dir: str, batch_size: int, masked: bool, count: int, shards: int = 1):
  """`count` tokenised batches of real drawings in a fixed shuffled order."""
  import numpy as np
  from sketchjax.data import pipeline, tokenize
  from sketchjax.data.formats import folder
  from sketchjax.sketch.sketch import to_stroke3
  from sketchjax.tasks.classify_config import POINT_BUCKETS, STROKE_BUCKETS

  records = []
  for label, path in enumerate(folder.list_category_files(data_dir).values()):
    records += [{"stroke3": to_stroke3(d.sketch), "label": label}
                for d in folder.read_drawings(path)]
  order = np.random.default_rng(0).permutation(len(records))
  config = tokenize.TokenizerConfig(stroke_buckets=STROKE_BUCKETS if masked else None,
                                    point_buckets=POINT_BUCKETS, num_shards=shards,
                                    bucket_packed_rows=_BUCKET_ROWS.value)
  out = []
  for i in range(count):
    examples = [pipeline.decode(records[j])
                for j in order[i * batch_size:(i + 1) * batch_size]]
    out.append(tokenize.tokenize_batch([e.sketch for e in examples],
                                       [e.label for e in examples], config))
  return out


def run_one(spec: str) -> dict:
  """Times one configuration in this process."""
  import jax
  import numpy as np
  import optax
  from sketchjax.models import sketchxainet
  from sketchjax.training import microbatch

  size, layout, mode, batch_size = spec.split(":")
  batch_size = int(batch_size)
  masked = layout == "masked"
  make = sketchxainet.tiny if size == "tiny" else sketchxainet.base
  model = make(NUM_CLASSES, mask_padding=masked)
  num_micro = microbatches(batch_size, _MICROBATCH.value)
  batches = _batches(_DATA_DIR.value, batch_size, masked, _BATCHES.value, shards=num_micro)
  params = jax.jit(lambda b: model.init({"params": jax.random.key(0)}, b, train=False)
                   ["params"])(batches[0])
  tx = optax.adamw(3e-4, weight_decay=1e-4)

  def loss(p, b, rng):
    logits, _ = model.apply({"params": p}, b, train=True, rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, b["label"]).mean(), {}

  if mode == "train":
    def step(state, batch):
      p, opt = state
      (value, _), grads = microbatch.value_and_grad(loss, p, batch, jax.random.key(1),
                                                    num_microbatches=num_micro, num_shards=1)
      updates, opt = tx.update(grads, opt, p)
      return (optax.apply_updates(p, updates), opt), value
    fn = jax.jit(step, donate_argnums=0)
    state = (params, tx.init(params))
  else:
    fn = jax.jit(lambda p, batch: microbatch.concatenated(
        lambda b: model.apply({"params": p}, b, train=False)[0], batch,
        num_microbatches=num_micro, num_shards=1))
    state = params

  def step_flops(b, key) -> float:
    """XLA's FLOP count of the step (a scan's body counts once: count one micro-batch)."""
    if num_micro == 1:
      return timing.compiled_flops(compiled[key])
    first = jax.tree.map(lambda x: x[0], microbatch.split(b, num_micro, 1))
    if mode == "train":
      one = jax.value_and_grad(lambda p, m: loss(p, m, jax.random.key(1))[0])
    else:
      one = lambda p, m: model.apply({"params": p}, m, train=False)[0]
    return num_micro * timing.compiled_flops(jax.jit(one).lower(params, first).compile())

  compiled, flops_of_shape, flops = {}, {}, []
  for b in batches:  # compile every shape before timing
    key = tuple((k, v.shape) for k, v in b.items())
    if key not in compiled:
      compiled[key] = fn.lower(state, b).compile()
      flops_of_shape[key] = step_flops(b, key)
    flops.append(flops_of_shape[key])
  times = []
  for b in batches:
    start = time.perf_counter()
    out = fn(state, b)
    if mode == "train":
      state, value = out
      value.block_until_ready()
    else:
      out.block_until_ready()
    times.append(time.perf_counter() - start)
  seconds = float(np.median(times))
  return {"spec": spec, "microbatches": num_micro, "sketches_per_s": batch_size / seconds,
          "seconds_per_batch": seconds, "shapes_compiled": len(compiled),
          "flops_per_s": float(np.median(np.asarray(flops) / np.asarray(times))),
          "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _fmt_ratio(x, y) -> str:
  return f"{x / y:5.2f}x" if x and y else "   - "


def main(argv):
  del argv
  if _ONLY.value:
    print(json.dumps(run_one(_ONLY.value)))
    return
  model_name = cpu_reference.cpu_model()
  _, official = cpu_reference.reference_set(OFFICIAL, model_name)
  official = official or {}
  print(cpu_reference.describe(OFFICIAL, model_name))
  rate = timing.product_gflops(2048, 2048, 2048) * 1e9
  print(f"matmul rate (float32, 2048^3): {rate / 1e9:.1f} GFLOP/s; "
        f"{os.cpu_count()} cores; JAX {__import__('jax').__version__}")
  results = {}
  for size, layout, mode, batch in CONFIGS:
    if size == "base" and _SKIP_BASE.value:
      continue
    spec = f"{size}:{layout}:{mode}:{batch}"
    proc = subprocess.run([sys.executable, __file__, f"--only={spec}",
                           f"--data_dir={_DATA_DIR.value}", f"--batches={_BATCHES.value}",
                           f"--microbatch={_MICROBATCH.value}",
                           f"--bucket_packed_rows={_BUCKET_ROWS.value}"],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
      print(f"{spec}: failed\n{proc.stderr[-2000:]}")
      continue
    results[spec] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  done {spec}: {results[spec]['sketches_per_s']:.1f} sketches/s", flush=True)

  print("\nmodel  mode   batch | faithful sk/s  GiB  GFLOP/s | masked sk/s  GiB  GFLOP/s |"
        " official sk/s GiB | faithful/off masked/off masked/faithful")
  for size, mode, batch in sorted({(s, m, b) for s, _, m, b in CONFIGS}):
    f = results.get(f"{size}:faithful:{mode}:{batch}")
    m = results.get(f"{size}:masked:{mode}:{batch}")
    off_speed, off_mem = official.get((size, mode, batch), (None, None))
    cell = lambda r: (f"{r['sketches_per_s']:12.1f} {r['peak_gib']:5.2f} "
                      f"{r['flops_per_s'] / 1e9:8.1f}" if r else f"{'-':>12} {'-':>5} {'-':>8}")
    fs, ms = (f or {}).get("sketches_per_s"), (m or {}).get("sketches_per_s")
    print(f"{size:5}  {mode:5}  {batch:5} | {cell(f)} | {cell(m)} | "
          f"{off_speed or '-':>13} {off_mem or '-':>3} | {_fmt_ratio(fs, off_speed):>12} "
          f"{_fmt_ratio(ms, off_speed):>10} {_fmt_ratio(ms, fs):>15}")
  print("\nFLOP/s as a share of the matmul rate: " + ", ".join(
      f"{k} {v['flops_per_s'] / rate:.0%}" for k, v in results.items()))


if __name__ == "__main__":
  app.run(main)
