"""Writes drawings sampled from pretrained sketch-rnn generators as sketch-rnn `.npz` files.

  python -m sketchjax.main --config=configs/sketch_rnn_samples.py --workdir=<dir>

`run(config, workdir)` loads each `<class>.gen.json` of `config.model_dir`,
samples `train` / `valid` / `test` drawings a class (one jitted `lax.scan`
per chunk of `chunk` drawings, sketchjax.models.sketch_rnn) and writes
  <category>.npz   the official sketch-rnn layout (int16 stroke-3 in drawing
                   units), named by the QuickDraw category ("palm_tree" ->
                   "palm tree.npz"), so the folder trains the classify task
                   (`--config.data.dir=<dir> --config.data.format=sketchrnn_npz
                   --config.data.categories=folder`) and its classes match the
                   real QuickDraw files for `mode=evaluate`;
  samples.png      the first drawings of every class;
  samples.json     the settings and the counts kept and dropped.

With `simplify` (default) each drawing is made like the official
`full/simplified` drawings (aligned to 0, longest side 255, RDP with epsilon
2, integer coordinates), so the training drawings have the point density of
the real test drawings (the raw samples have 2-3x more points, which the
BiLSTM pays for). Drawings are kept only when they have between `min_points`
and `max_seq_len` points (a generator stopping at once, or never, is dropped
and counted).
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from sketchjax.data.formats.sketchrnn_npz import write_sketchrnn_npz
from sketchjax.models import sketch_rnn
from sketchjax.sketch import normalize, plot
from sketchjax.sketch.sketch import Sketch, from_stroke3
from sketchjax.training.progress import format_duration

SPLITS = ("train", "valid", "test")


def generator_files(model_dir: str, classes: str) -> dict[str, pathlib.Path]:
  """`{QuickDraw category: <class>.gen.json}` of `model_dir`: every file (`classes="all"`)
  or the comma-separated classes (file spelling or category spelling)."""
  folder = pathlib.Path(model_dir)
  if not folder.is_dir():
    raise FileNotFoundError(f"model_dir {folder} is not a folder of sketch-rnn "
                            "<class>.gen.json files (e.g. ../shared/pretrained/sketch_rnn)")
  files = {p.name.removesuffix(".gen.json").replace("_", " "): p
           for p in sorted(folder.glob("*.gen.json"))}
  if not files:
    raise ValueError(f"no <class>.gen.json files in {folder}")
  if classes == "all":
    return files
  wanted = [c.strip().replace("_", " ") for c in classes.split(",") if c.strip()]
  missing = [c for c in wanted if c not in files]
  if missing:
    raise ValueError(f"no generator for {missing} in {folder}; it has {sorted(files)}")
  return {c: files[c] for c in wanted}


def as_simplified(sketch: Sketch, epsilon: float = 2.0) -> Sketch:
  """The drawing as in the official `full/simplified` files: aligned to 0, scaled
  uniformly to a longest side of 255, RDP with `epsilon`, integer coordinates."""
  low, high = sketch.bounds()
  scale = 255.0 / max(float((high - low).max()), 1e-9)
  return normalize.simplify(sketch.map_points(lambda s: (s - low) * scale), epsilon).map_points(
      np.round)


def keep_drawing(stroke3: np.ndarray, config: ml_collections.ConfigDict,
                 max_points: int) -> Sketch | None:
  """The drawing of sampled stroke-3 rows (simplified with `config.simplify`, else with
  offsets rounded to integers), or None when it has fewer than `config.min_points` or
  more than `max_points` points."""
  if not config.min_points <= len(stroke3) <= max_points:
    return None
  sketch = as_simplified(from_stroke3(stroke3)) if config.simplify else from_stroke3(
      np.round(stroke3))
  return sketch if sketch.num_points >= config.min_points else None


def sample_class(info: sketch_rnn.GeneratorInfo, params: sketch_rnn.GeneratorParams,
                 rng: jax.Array, count: int, config: ml_collections.ConfigDict
                 ) -> tuple[list[Sketch], int]:
  """`count` kept drawings of one generator and the number dropped.

  Stops with a ValueError when fewer than one in ten samples is kept (a
  broken model or a bad temperature would loop for ever).
  """
  kept, dropped, chunk = [], 0, 0
  while len(kept) < count:
    if dropped > 9 * max(len(kept), config.chunk):
      raise ValueError(f"{info.name}: kept {len(kept)} of {len(kept) + dropped} samples "
                       f"(between {config.min_points} and {info.max_seq_len} points); "
                       "check the model file or the temperature")
    rows = sketch_rnn.sample(info, params, jax.random.fold_in(rng, chunk), config.chunk,
                             temperature=config.temperature,
                             magenta_start=config.magenta_start)
    for stroke3 in rows:
      sketch = keep_drawing(stroke3, config, info.max_seq_len - 1)
      if sketch is None:
        dropped += 1
      elif len(kept) < count:
        kept.append(sketch)
    chunk += 1
  return kept, dropped


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Entry point: samples every class and writes the npz files and the figure."""
  counts = {split: int(config[split]) for split in SPLITS}
  if min(counts.values()) < 1:
    raise ValueError(f"every split needs at least one drawing a class, got {counts}")
  files = generator_files(config.model_dir, config.classes)
  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  rng = jax.random.key(config.seed)
  summary, shown, titles = {}, [], []
  start = time.monotonic()
  for index, (category, path) in enumerate(files.items()):
    info, params = sketch_rnn.load_generator(path)
    drawings, dropped = sample_class(info, params, jax.random.fold_in(rng, index),
                                     sum(counts.values()), config)
    ends = np.cumsum([0, *counts.values()])
    write_sketchrnn_npz(out / f"{category}.npz",
                        {split: drawings[a:b] for split, a, b in zip(SPLITS, ends, ends[1:])})
    summary[category] = {"kept": len(drawings), "dropped": dropped,
                         "mean_points": float(np.mean([d.num_points for d in drawings])),
                         "mean_strokes": float(np.mean([d.num_strokes for d in drawings]))}
    shown += drawings[:config.figure_per_class]
    titles += [category] * min(config.figure_per_class, len(drawings))
    elapsed = time.monotonic() - start
    logging.info("sketch-rnn %s: %d drawings (%d dropped) | class %d/%d | ETA %s", category,
                 len(drawings), dropped, index + 1, len(files),
                 format_duration(elapsed / (index + 1) * (len(files) - index - 1)))
  plot.save_sketch_grid(shown, titles, out / "samples.png", columns=config.figure_per_class)
  result = {"model_dir": str(config.model_dir), "temperature": config.temperature,
            "simplify": config.simplify,
            "magenta_start": config.magenta_start, "seed": config.seed, "splits": counts,
            "classes": summary, "seconds": time.monotonic() - start}
  (out / "samples.json").write_text(json.dumps(result, indent=1))
  print(json.dumps({"classes": len(summary), "seconds": round(result["seconds"], 1)}))
  return result
