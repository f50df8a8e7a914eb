"""Stroke Location Inversion of a trained SketchXAINet on held-out drawings.

  python -m sketchjax.main --config=configs/sli.py --workdir=<dir> \
      --config.checkpoint=<trained workdir> [--config.mode=recovery|transfer]

`run(config, workdir)` restores the classifier of `config.checkpoint`, inverts
the test drawings (`config.data.source`):
  quickdraw   the test drawings of a folder of official files
              (`config.data.dir`; ndjson/bin split by key_id as in training,
              sketchjax/data/splits.py; sketch-rnn npz give their test split),
              of the checkpoint's classes found there, interleaved class by
              class so `data.max_sketches` covers many classes;
  procedural  the checkpoint's own held-out procedural split;
in batches of `batch_size` sketches x `paths` runs, each one jitted `lax.scan`
(sketchjax.methods.sli), the sketches sorted by stroke count so that with the
masked model's bucketed slots a batch costs what its sketches need. Each batch
is split over the process's devices (`devices`, default all: data parallel,
the parameters replicated; runs are independent, so the results do not depend
on the device count); one process. Writes to the workdir
  sli_<mode>.json            the summary metrics (sketchjax.methods.sli.summarize),
                             the model's top-1 at the true locations
                             (`original_top1`) and the metrics on the sketches
                             it recognises (`on_recognised`), the settings and
                             per-sketch outcomes;
  sli_<mode>_steps.png       one path of one sketch at steps 0, 10%, ..., 100%;
  sli_<mode>.gif             the same path, one frame a step;
  sli_<mode>_paths.png       the paper's Fig. 1: one sketch, several paths
                             (random starts in recovery, targets in transfer),
                             snapshots and the target confidence along each.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import pathlib
import time
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
from matplotlib import animation  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from sketchjax.data import pipeline, records, splits, tokenize  # noqa: E402
from sketchjax.data.formats import folder  # noqa: E402
from sketchjax.methods import sli  # noqa: E402
from sketchjax.models import sketchxainet  # noqa: E402
from sketchjax.sketch import plot  # noqa: E402
from sketchjax.sketch.sketch import Sketch, to_stroke3  # noqa: E402
from sketchjax.tasks import classify  # noqa: E402
from sketchjax.training import mesh as mesh_lib  # noqa: E402
from sketchjax.training.progress import format_duration  # noqa: E402

MODES = ("recovery", "transfer")


def sli_config(config: ml_collections.ConfigDict) -> sli.SLIConfig:
  return sli.SLIConfig(**config.sli.to_dict())


def quickdraw_test_records(data_dir: str, class_names: Sequence[str], test_fraction: float,
                           policy: records.BadInputPolicy) -> list[dict]:
  """Test records {"stroke3", "label"} of the model's classes found in `data_dir`,
  interleaved: the first drawing of every class, then the second, ..."""
  files = folder.list_category_files(data_dir)
  present = [name for name in class_names if name in files]
  if not present:
    raise ValueError(f"{data_dir} has no file of the model's classes "
                     f"({', '.join(class_names[:5])}, ...)")
  logging.info("%d of the model's %d classes are in %s", len(present), len(class_names),
               data_dir)
  per_class = []
  for name in present:
    path = files[name]
    drawings = folder.read_drawings(path, split="test", policy=policy)
    if path.suffix != ".npz":  # npz files hold their own test split
      drawings = splits.split_by_key_id(drawings, test_fraction)[1]
    label = list(class_names).index(name)
    per_class.append([{"stroke3": to_stroke3(d.sketch), "label": label} for d in drawings])
  return [r for group in itertools.zip_longest(*per_class) for r in group if r is not None]


def test_records(config: ml_collections.ConfigDict, class_names: Sequence[str],
                 trained_config: ml_collections.ConfigDict) -> list[dict]:
  """The held-out records named by `config.data`, at most `data.max_sketches`."""
  data = config.data
  if data.source == "quickdraw":
    policy = records.BadInputPolicy(on_error=data.on_bad_record)
    source = quickdraw_test_records(data.dir, class_names, data.test_fraction, policy)
    if policy.counts:
      logging.warning("%s: %s", data.dir, policy.summary())
  elif data.source == "procedural":
    if trained_config.data.source != "procedural":
      raise ValueError(f"data.source='procedural' needs a model trained on the procedural "
                       f"data; {config.checkpoint} was trained on "
                       f"{trained_config.data.source!r}")
    _, test, _ = classify.load_sources(trained_config, pathlib.Path(config.checkpoint))
    source = [test[i] for i in range(len(test))]
  else:
    raise ValueError(f"unknown data.source {data.source!r}; expected 'quickdraw' or "
                     "'procedural'")
  if data.max_sketches:
    source = source[:data.max_sketches]
  if not source:
    raise ValueError(f"no test drawings to invert in data.source={data.source!r}")
  return source


def sketch_at(points: np.ndarray, stroke_len: np.ndarray, loc: np.ndarray) -> Sketch:
  """The strokes of one tokenised sketch (points [S, P, 4], stroke_len [S]) moved
  to start at loc [S, 2]: what the classifier sees."""
  return Sketch(tuple(np.cumsum(points[s, :n, :2], axis=0) + loc[s]
                      for s, n in enumerate(stroke_len) if n > 0))


@dataclasses.dataclass
class FigureRun:
  """One sketch's inversion, kept for the figures."""

  points: np.ndarray  # [S, P, 4]
  stroke_len: np.ndarray  # [S]
  true_loc: np.ndarray  # [S, 2]
  label: int
  targets: np.ndarray  # [K]
  target_prob: np.ndarray  # [K, T + 1]
  prediction: np.ndarray  # [K, T + 1]
  locations: np.ndarray  # [K, T + 1, S, 2]

  def sketch(self, path: int, record: int) -> Sketch:
    return sketch_at(self.points, self.stroke_len, self.locations[path, record])

  def truth(self) -> Sketch:
    return sketch_at(self.points, self.stroke_len, self.true_loc)

  def limits(self) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a square covering every frame of every path and the truth."""
    real = self.stroke_len > 0
    offsets = [np.cumsum(self.points[s, :n, :2], axis=0) for s, n in enumerate(self.stroke_len)
               if n > 0]
    low_offset = np.stack([o.min(0) for o in offsets])  # [n, 2]
    high_offset = np.stack([o.max(0) for o in offsets])
    starts = np.concatenate([self.locations[:, :, real].reshape(-1, real.sum(), 2),
                             self.true_loc[None, real]])  # [frames, n, 2]
    low = (starts + low_offset).min((0, 1))
    high = (starts + high_offset).max((0, 1))
    center, half = (low + high) / 2, (high - low).max() / 2 + 0.05  # square, with a margin
    return center - half, center + half


def snapshot_records(steps: int, count: int) -> list[int]:
  """`count` records evenly spaced from 0 to `steps` (0, 10, ..., 100 for 11 of 100)."""
  return sorted({int(r) for r in np.linspace(0, steps, count).round()})


def _draw(ax, sketch: Sketch, limits: tuple[np.ndarray, np.ndarray], title: str,
          color: str = "black") -> None:
  ax.clear()
  plot.draw_sketch(ax, sketch)
  (x0, y0), (x1, y1) = limits
  ax.set_xlim(x0, x1)
  ax.set_ylim(y1, y0)  # y down, as on a canvas
  ax.set_title(title, fontsize=7, color=color)


def _step_title(run: FigureRun, class_names: Sequence[str], path: int, record: int) -> tuple[
    str, str]:
  target = int(run.targets[path])
  hit = run.prediction[path, record] == target
  return (f"step {record}\n{class_names[target]} {run.target_prob[path, record]:.1%}",
          "green" if hit else "black")


def save_steps_figure(run: FigureRun, class_names: Sequence[str], path: int,
                      filename: pathlib.Path) -> None:
  """One path at steps 0, 10%, ..., 100%, then the true sketch."""
  steps = run.target_prob.shape[1] - 1
  shown = snapshot_records(steps, 11)
  fig, axes = plt.subplots(1, len(shown) + 1, figsize=(1.5 * (len(shown) + 1), 1.9))
  limits = run.limits()
  for ax, record in zip(axes, shown):
    _draw(ax, run.sketch(path, record), limits, *_step_title(run, class_names, path, record))
  _draw(axes[-1], run.truth(), limits, f"original\n{class_names[run.label]}")
  fig.tight_layout()
  fig.savefig(filename, dpi=100)
  plt.close(fig)


def save_gif(run: FigureRun, class_names: Sequence[str], path: int, filename: pathlib.Path,
             fps: int) -> None:
  """An animated GIF of one path, a frame a step (matplotlib's PillowWriter)."""
  fig, ax = plt.subplots(figsize=(3.0, 3.2))
  limits = run.limits()

  def frame(record):
    _draw(ax, run.sketch(path, record), limits, *_step_title(run, class_names, path, record))

  movie = animation.FuncAnimation(fig, frame, frames=run.target_prob.shape[1])
  movie.save(filename, writer=animation.PillowWriter(fps=fps), dpi=80)
  plt.close(fig)


def save_paths_figure(run: FigureRun, class_names: Sequence[str],
                      filename: pathlib.Path) -> None:
  """The paper's Fig. 1: a row of snapshots per path and the target confidence of
  every path against the step."""
  paths, records = run.target_prob.shape
  steps = records - 1
  shown = snapshot_records(steps, 5)
  fig = plt.figure(figsize=(1.5 * (len(shown) + 3), 1.7 * paths + 0.3))
  grid = fig.add_gridspec(paths, len(shown) + 3)
  limits = run.limits()
  for k in range(paths):
    for column, record in enumerate(shown):
      _draw(fig.add_subplot(grid[k, column]), run.sketch(k, record), limits,
            *_step_title(run, class_names, k, record))
  curves = fig.add_subplot(grid[:, len(shown):])
  for k in range(paths):
    target = class_names[int(run.targets[k])]
    curves.plot(np.arange(records), 100 * run.target_prob[k],
                label=f"path {k + 1} ({target}): {run.target_prob[k, 0]:.2%} -> "
                      f"{run.target_prob[k, -1]:.2%}")
  curves.set_xlabel("step")
  curves.set_ylabel("target class confidence (%)")
  curves.set_ylim(-2, 102)
  curves.legend(fontsize=7)
  fig.suptitle(f"{class_names[run.label]}: stroke location inversion", fontsize=9)
  fig.tight_layout()
  fig.savefig(filename, dpi=100)
  plt.close(fig)


def _tokenizer(trained_config: ml_collections.ConfigDict) -> tokenize.TokenizerConfig:
  """The trained model's tokeniser (slot layout), one shard: SLI drops the packed rows."""
  t = trained_config.tokenizer
  return tokenize.TokenizerConfig(
      max_strokes=t.max_strokes,
      stroke_buckets=tuple(t.stroke_buckets) if t.bucket_strokes else None,
      point_buckets=tuple(t.point_buckets))


def _starts_and_targets(mode: str, rng: jax.Array, batch: dict, paths: int, num_classes: int,
                        config: sli.SLIConfig) -> tuple[np.ndarray, np.ndarray]:
  """(init_loc [B, K, S, 2], targets [B, K]) of one batch."""
  init_rng, target_rng = jax.random.split(rng)
  labels = np.broadcast_to(batch["label"][:, None], (len(batch["label"]), paths))
  if mode == "recovery":
    return np.asarray(sli.recovery_init(init_rng, batch, paths, config.init_std)), labels
  loc = batch["loc"]
  return (np.broadcast_to(loc[:, None], (loc.shape[0], paths, *loc.shape[1:])),
          np.asarray(sli.transfer_targets(target_rng, labels, num_classes)))


def stroke_count_order(source: Sequence[dict]) -> np.ndarray:
  """Indices of the records by stroke count (stable): batches of similar sketches
  bucket to fewer slots."""
  counts = [int(np.count_nonzero(np.asarray(r["stroke3"])[:, 2] > 0)) for r in source]
  return np.argsort(counts, kind="stable")


def sli_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """A 'data' mesh over the first `config.devices` local devices (0 = as many as divide
  `config.batch_size`, at most all)."""
  available = jax.local_devices()
  count = config.devices or max(d for d in range(1, len(available) + 1)
                                if config.batch_size % d == 0)
  if not 1 <= count <= len(available):
    raise ValueError(f"devices={config.devices}: this process has {len(available)} devices")
  if config.batch_size % count:
    raise ValueError(f"batch_size={config.batch_size} must be a multiple of the {count} "
                     "devices it is split over (set --config.batch_size or --config.devices)")
  return mesh_lib.make_mesh(devices=available[:count])


def invert_records(config: ml_collections.ConfigDict, model, params, source: Sequence[dict],
                   trained_config: ml_collections.ConfigDict, num_classes: int):
  """Inverts every record in batches of `config.batch_size` x `config.paths` runs.

  The records run sorted by stroke count (with bucketed slots a batch then
  costs what its sketches need); the outputs are in the order of `source`.
  Every batch is split over the devices of `sli_mesh(config)`.

  Returns (per-path metrics {name: [N, K]}, weights [N], labels [N], targets
  [N, K], recognised [N] (the model predicts the label at the true locations),
  the FigureRun of `config.figure.sketch`, seconds).
  """
  cfg = sli_config(config)
  order = stroke_count_order(source)
  stats = tokenize.TokenizeStats()
  batches = pipeline.eval_batches([source[i] for i in order],
                                  global_batch_size=config.batch_size,
                                  tokenizer=_tokenizer(trained_config), stats=stats)
  apply_logits = lambda p, b: model.apply({"params": p}, b, train=False, logits_only=True)[0]
  inverter = sli.jit_inverter(apply_logits, cfg)
  predict = jax.jit(lambda p, b: jnp.argmax(apply_logits(p, b), -1))
  embed_shapes = jax.jit(functools.partial(sketchxainet.with_shape_embeddings, model))
  mesh = sli_mesh(config)
  params = jax.device_put(params, mesh_lib.replicated(mesh))
  split = lambda tree: jax.device_put(tree, mesh_lib.batch_sharding(mesh))
  num_batches = -(-len(source) // config.batch_size)
  figure_batch, figure_row = divmod(int(np.flatnonzero(order == config.figure.sketch)[0]),
                                    config.batch_size)
  rng = jax.random.key(config.seed)
  outcomes, figure_run = [], None
  start = time.monotonic()
  for index, strokes in enumerate(batches):
    # the shape embeddings do not change while the locations move: computed once
    # a batch, from the packed rows (no work on empty slots)
    batch = {k: np.asarray(v) for k, v in embed_shapes(params, strokes).items()}
    init_loc, targets = _starts_and_targets(config.mode, jax.random.fold_in(rng, index), batch,
                                            config.paths, num_classes, cfg)
    result = jax.device_get(inverter(params, split(batch), split(targets), split(init_loc)))
    recognised = np.asarray(predict(params, split(batch))) == batch["label"]
    outcomes.append({
        **sli.path_metrics(result, targets, batch, cfg,
                           true_loc=batch["loc"] if config.mode == "recovery" else None),
        "weight": batch["weight"], "label": batch["label"], "targets": targets,
        "recognised": recognised})
    if index == figure_batch:
      r = figure_row
      figure_run = FigureRun(strokes["points"][r], batch["stroke_len"][r], batch["loc"][r],
                             int(batch["label"][r]), targets[r], result.target_prob[r],
                             result.prediction[r], result.locations[r])
    if (index + 1) % config.log_every == 0 or index + 1 == num_batches:
      elapsed = time.monotonic() - start
      done = min((index + 1) * config.batch_size, len(source))
      weight = np.concatenate([o["weight"] for o in outcomes])
      success = np.concatenate([o["success"] for o in outcomes]).mean(1)
      logging.info("SLI %s: batch %d/%d, %d sketches x %d paths | success %.3f | %.2f "
                   "sketches/s | ETA %s", config.mode, index + 1, num_batches, done,
                   config.paths, (success * weight).sum() / max(weight.sum(), 1), done / elapsed,
                   format_duration(elapsed / (index + 1) * (num_batches - index - 1)))
  tokenize.log_stats(stats, "SLI")
  restore = np.argsort(order)  # sorted position of every record; padding is cut off
  merged = {k: np.concatenate([o[k] for o in outcomes])[:len(source)][restore]
            for k in outcomes[0]}
  weight, labels, targets, recognised = (
      merged.pop(k) for k in ("weight", "label", "targets", "recognised"))
  return merged, weight, labels, targets, recognised, figure_run, time.monotonic() - start


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Entry point: inverts the test drawings and writes metrics and figures."""
  if config.mode not in MODES:
    raise ValueError(f"unknown mode {config.mode!r}; expected one of {list(MODES)}")
  if not config.checkpoint:
    raise ValueError("SLI needs a trained classifier: --config.checkpoint=<trained workdir>")
  if jax.process_count() > 1:
    raise ValueError("the SLI task runs in one process (launch it without jax.distributed)")
  model, params, class_names, trained_config = classify.load_trained(config.checkpoint)
  if trained_config.model.kind != "sketchxainet":
    raise ValueError(f"SLI inverts stroke locations of a SketchXAINet; {config.checkpoint} "
                     f"holds a {trained_config.model.kind!r}")
  if config.mode == "transfer" and len(class_names) < 2:
    raise ValueError("transfer needs a model of at least 2 classes")
  source = test_records(config, class_names, trained_config)
  if not 0 <= config.figure.sketch < len(source):
    raise ValueError(f"figure.sketch={config.figure.sketch} is not one of the {len(source)} "
                     "sketches")
  logging.info("SLI %s of %d sketches x %d paths, %d steps, with %s", config.mode, len(source),
               config.paths, config.sli.steps, config.checkpoint)
  per_path, weight, labels, targets, recognised, figure_run, seconds = invert_records(
      config, model, params, source, trained_config, len(class_names))

  summary = sli.summarize(per_path, weight)
  # How well the model knows the sketches at their true locations, and the
  # outcomes on the ones it recognises (a recovery can only be judged there).
  summary["original_top1"] = float((recognised * weight).sum() / max(weight.sum(), 1e-12))
  if (recognised * weight).sum() > 0:
    summary["on_recognised"] = sli.summarize(per_path, weight * recognised)
  real = weight > 0
  result = {
      "mode": config.mode, "checkpoint": str(config.checkpoint),
      "data": config.data.to_dict(), "sli": dataclasses.asdict(sli_config(config)),
      "best_of_paths": "per sketch, the path with the highest final target probability",
      "summary": summary, "seconds": seconds, "sketches_per_s": len(source) / seconds,
      "per_sketch": [
          {"label": class_names[int(labels[i])], "recognised": bool(recognised[i]),
           "targets": [class_names[int(t)] for t in targets[i]],
           **{k: [round(float(x), 5) for x in v[i]] for k, v in per_path.items()}}
          for i in np.flatnonzero(real)],
  }
  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  (out / f"sli_{config.mode}.json").write_text(json.dumps(result, indent=1))
  path = min(config.figure.path, config.paths - 1)
  save_steps_figure(figure_run, class_names, path, out / f"sli_{config.mode}_steps.png")
  save_gif(figure_run, class_names, path, out / f"sli_{config.mode}.gif", config.figure.gif_fps)
  save_paths_figure(figure_run, class_names, out / f"sli_{config.mode}_paths.png")
  logging.info("SLI %s summary: %s", config.mode, json.dumps(summary))
  print(json.dumps({"mode": config.mode, **summary}))
  return summary
