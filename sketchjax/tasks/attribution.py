"""Stroke-level attribution of a trained or pretrained sketch classifier on real drawings.

`run(config, workdir)` explains the predictions of `config.model` on QuickDraw
drawings from `config.data.dir` (the key_id test split of each category file)
and writes to the workdir:
  attributions.json   per sketch: class, target, scores, per-stroke attributions
                      of every method, P-SLA per segment and point-gradient heat
                      per point (raster models), deletion/insertion areas;
  faithfulness.json   mean deletion and insertion areas of each method against
                      random and drawing order, and the IG completeness error;
  stroke_counts.json  stroke-count statistics of all drawings read;
  strokes_<method>.png, psla.png, deletion_curves.png, order_similarity.png
                      (SketchXAINet only, spec A.4).

Models (`config.model.kind`):
  doodlenet   the pretrained TF.js doodleNet in `model.path`; drawings are
              drawn by the soft rasteriser with the official bitmap settings;
  checkpoint  a workdir trained by the classify task: SketchXAINet (vector
              attributions) or the raster CNN (raster attributions on its
              own image size, soft-drawn).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from sketchjax.data import soft_rasterize as sr  # noqa: E402
from sketchjax.data import splits, tokenize  # noqa: E402
from sketchjax.data.formats import folder  # noqa: E402
from sketchjax.data.records import BadInputPolicy, Drawing  # noqa: E402
from sketchjax.methods import attribution, faithfulness  # noqa: E402
from sketchjax.models import doodlenet, raster_classifier  # noqa: E402
from sketchjax.models.resnet import ResNet18  # noqa: E402
from sketchjax.sketch import normalize  # noqa: E402
from sketchjax.sketch.sketch import Sketch  # noqa: E402
from sketchjax.tasks import classify  # noqa: E402

BASELINE_ORDERS = ("random", "drawing_order")


@dataclasses.dataclass(frozen=True)
class Explainer:
  """A model ready to explain batches of drawings.

  Attributes:
    class_names: the model's classes in output order.
    methods: the per-stroke attributions it returns, used to rank strokes.
    prepare: drawings -> dict of host arrays (one leading sketch axis).
    explain: (arrays, targets int32[B] or -1 = predicted, keys) -> dict of
      per-sketch results (jitted).
    strokes_of: drawing -> the strokes as the figures draw them.
  """

  class_names: tuple[str, ...]
  methods: tuple[str, ...]
  prepare: Callable[[Sequence[Drawing]], dict[str, np.ndarray]]
  explain: Callable[..., dict[str, jax.Array]]
  strokes_of: Callable[[Drawing], list[np.ndarray]]


def _target_and_probability(logits_of_full: jax.Array, target: jax.Array):
  target = jnp.where(target < 0, jnp.argmax(logits_of_full), target)
  return target, lambda logits: jax.nn.softmax(logits)[target]


def _with_curves(out: dict, methods: Sequence[str], prob_keep, present, key) -> dict:
  """Adds deletion / insertion curves and areas of every method and baseline order."""
  n = present.sum()
  orders = {m: faithfulness.ranking(out[m], present) for m in methods}
  orders["random"] = faithfulness.random_order(key, present)
  orders["drawing_order"] = faithfulness.drawing_order(present)
  for name, order in orders.items():
    deletion, insertion = faithfulness.curves(prob_keep, order, present)
    out[f"deletion/{name}"], out[f"insertion/{name}"] = deletion, insertion
    out[f"deletion_auc/{name}"] = faithfulness.area(deletion, n)
    out[f"insertion_auc/{name}"] = faithfulness.area(insertion, n)
  return out


def raster_explainer(image_logits: Callable[[jax.Array], jax.Array],
                     class_names: Sequence[str], settings: sr.RasterSettings,
                     to_pixels: Callable[[Sequence[np.ndarray]], list[np.ndarray]],
                     config: ml_collections.ConfigDict) -> Explainer:
  """SLA / P-SLA / occlusion for a model of float32[size, size] ink images -> logits [C]."""
  steps, chunk = config.attribution.steps, config.attribution.chunk or None

  def prepare(drawings):
    xy, lens, num_segments = sr.pad_batch([to_pixels(d.sketch.strokes) for d in drawings])
    return {"xy": xy, "lens": lens, "segment_rows": np.zeros(num_segments, np.int8),
            "pair_rows": np.zeros(sr.tile_pair_budget(xy, lens, settings), np.int8)}

  def one(xy, lens, num_segments, num_pairs, target, key):
    coverage = sr.draw_strokes(xy, lens, settings, num_segments=num_segments,
                               num_pairs=num_pairs)
    target, probability = _target_and_probability(image_logits(sr.composite(coverage)), target)
    out = attribution.raster_attributions(lambda image: image_logits(image)[target], xy, lens,
                                          settings, num_segments=num_segments,
                                          num_pairs=num_pairs, steps=steps, chunk=chunk)
    out["psla_ig_by_stroke"] = jax.ops.segment_sum(
        jnp.where(out["segment_stroke"] >= 0, out["psla_ig"], 0.0),
        jnp.maximum(out["segment_stroke"], 0), lens.shape[0])
    out["target"] = target
    prob_keep = lambda keep: probability(image_logits(sr.composite(coverage, keep)))
    return _with_curves(out, RASTER_METHODS, prob_keep, lens > 0, key)

  @functools.partial(jax.jit, static_argnames=("num_segments", "num_pairs"))
  def explain_batch(xy, lens, targets, keys, num_segments, num_pairs):
    run_one = lambda args: one(*args[:2], num_segments, num_pairs, *args[2:])
    return jax.lax.map(run_one, (xy, lens, targets, keys),
                       batch_size=config.attribution.sketches_at_once)

  def explain(arrays, targets, keys):
    return explain_batch(arrays["xy"], arrays["lens"], targets, keys,
                         num_segments=arrays["segment_rows"].shape[0],
                         num_pairs=arrays["pair_rows"].shape[0])

  return Explainer(tuple(class_names), RASTER_METHODS, prepare, explain,
                   lambda d: to_pixels(d.sketch.strokes))


RASTER_METHODS = ("sla_ig", "sla_grad_x_input", "occlusion", "psla_ig_by_stroke")
VECTOR_METHODS = ("gate_ig", "gate_grad_x_input", "occlusion")


def vector_explainer(model, params, class_names: Sequence[str], tokenizer: tokenize.TokenizerConfig,
                     config: ml_collections.ConfigDict) -> Explainer:
  """Occlusion and gate attributions for SketchXAINet."""
  steps, chunk = config.attribution.steps, config.attribution.chunk or None

  def prepare(drawings):
    sketches = [normalize.normalize_sketchxai(d.sketch) for d in drawings]
    batch = tokenize.tokenize_batch(sketches, [0] * len(sketches), tokenizer)
    return {**{k: batch[k] for k in ("points", "stroke_len", "loc")},
            "deletion_pairs": attribution.deletion_pairs(batch["stroke_len"])}

  batch_logits = lambda batch: model.apply({"params": params}, batch, train=False,
                                          logits_only=True)[0]
  logits_of = lambda sketch: batch_logits(jax.tree.map(lambda x: x[None], sketch))[0]

  def one(sketch, target, key, occlusion):
    probability = lambda logits: jax.nn.softmax(logits)[target]
    out = attribution.vector_attributions(model, params, sketch, lambda l: l[target],
                                          steps=steps, chunk=chunk)
    out["occlusion"], out["target"] = occlusion, target
    prob_keep = lambda keep: probability(logits_of(attribution.delete_strokes(sketch, keep)))
    return _with_curves(out, VECTOR_METHODS, prob_keep, sketch["stroke_len"] > 0, key)

  @jax.jit
  def explain(arrays, targets, keys):
    sketches = {k: arrays[k] for k in ("points", "stroke_len", "loc")}
    targets = jnp.where(targets < 0, jnp.argmax(batch_logits(sketches), -1), targets)
    occlusion = attribution.packed_occlusion(batch_logits, sketches, arrays["deletion_pairs"],
                                             targets, num_slots=sketches["loc"].shape[1])
    return jax.lax.map(lambda args: one(*args), (sketches, targets, keys, occlusion),
                       batch_size=config.attribution.sketches_at_once)

  return Explainer(tuple(class_names), VECTOR_METHODS, prepare, explain,
                   lambda d: list(normalize.normalize_sketchxai(d.sketch).strokes))


def raster_cnn_on_soft_images(model: raster_classifier.RasterClassifier, params: Any,
                              supersample: int):
  """A trained raster CNN fed by the soft rasteriser instead of its hard one.

  Returns (images float32[B, size, size] -> logits [B, C], the soft rasteriser's
  settings for its input, strokes (any float[n, 2]) -> pixel polylines as the
  classifier's tokeniser normalises them).
  """
  size = model.image_size
  settings = sr.RasterSettings(size=size, line_width=float(model.line_width), edge=0.5,
                               supersample=supersample)
  resnet = ResNet18(model.num_classes, model.widths, model.blocks, model.norm_groups)
  images_logits = lambda images: resnet.apply({"params": params["resnet"]},
                                              images[..., None])[0]
  to_pixels = lambda strokes: [np.asarray(sr.normalized_to_pixels(s, size)) for s in
                               normalize.normalize_sketchxai(Sketch(tuple(strokes))).strokes]
  return images_logits, settings, to_pixels


def doodlenet_on_soft_images(path: str, supersample: int):
  """The pretrained doodleNet of `path` fed by the soft rasteriser with the official bitmap
  settings: (image float32[28, 28] -> logits [345], class names, the settings); strokes go
  to pixels by `sr.official_pixels`."""
  model, variables, names = doodlenet.load_doodlenet(path)
  settings = dataclasses.replace(sr.OFFICIAL, supersample=supersample, edge=1.0 / supersample)
  return lambda image: model.apply(variables, image[None, ..., None])[0][0], names, settings


def build_explainer(config: ml_collections.ConfigDict) -> tuple[Explainer, Any]:
  """(explainer, SketchXAINet params or None) of `config.model`."""
  kind, path = config.model.kind, config.model.path
  if not path:
    raise ValueError("set --config.model.path: the doodleNet folder (model.json) for "
                     "model.kind=doodlenet, or a trained workdir for model.kind=checkpoint")
  if kind == "doodlenet":
    image_logits, names, settings = doodlenet_on_soft_images(path, config.raster.supersample)
    return raster_explainer(image_logits, names, settings, sr.official_pixels, config), None
  if kind != "checkpoint":
    raise ValueError(f"unknown model.kind {kind!r}; expected 'doodlenet' or 'checkpoint'")
  model, params, names, trained = classify.load_trained(path)
  if isinstance(model, raster_classifier.RasterClassifier):
    images_logits, settings, to_pixels = raster_cnn_on_soft_images(model, params,
                                                                   config.raster.supersample)
    image_logits = lambda image: images_logits(image[None])[0]
    return raster_explainer(image_logits, names, settings, to_pixels, config), None
  t = trained.tokenizer
  tokenizer = tokenize.TokenizerConfig(
      max_strokes=t.max_strokes,
      stroke_buckets=tuple(t.stroke_buckets) if t.bucket_strokes else None,
      point_buckets=tuple(t.point_buckets), num_shards=1)
  return vector_explainer(model, params, names, tokenizer, config), params


def load_drawings(config: ml_collections.ConfigDict,
                  class_names: Sequence[str]) -> tuple[list[Drawing], list[Drawing]]:
  """(drawings to explain, all drawings read) from `config.data.dir`.

  Per category file whose name is one of the model's classes: the test split
  (by key_id for ndjson and .bin, the file's own for sketch-rnn .npz), its
  first `data.per_category` drawings; at most `data.max_sketches` in all.
  """
  if not config.data.dir:
    raise ValueError("set --config.data.dir to a folder of official QuickDraw files "
                     "(<category>.ndjson), e.g. ../shared/data/quickdraw/simplified")
  files = folder.list_category_files(config.data.dir)
  wanted = (set(files) if config.data.categories == "all"
            else {c.strip() for c in config.data.categories.split(",")})
  unknown = sorted(set(files) & wanted - set(class_names))
  if unknown:
    logging.warning("skipping %d categories the model does not know: %s", len(unknown),
                    unknown[:10])
  policy = BadInputPolicy(on_error=config.data.on_bad_record)
  chosen, everything = [], []
  for name, path in files.items():
    if name not in wanted or name not in class_names:
      continue
    drawings = folder.read_drawings(path, split="test", policy=policy)
    everything += drawings
    test = (drawings if path.suffix == ".npz"  # already the sketch-rnn test split
            else splits.split_by_key_id(drawings, config.data.test_fraction)[1])
    chosen += test[:config.data.per_category]
  if not chosen:
    raise ValueError(f"{config.data.dir}: no drawings of the model's classes "
                     f"(categories={config.data.categories!r})")
  return chosen[:config.data.max_sketches], everything


def stroke_count_stats(drawings: Sequence[Drawing], threshold: int = 10) -> dict:
  """Stroke-count statistics: share of sketches with at most `threshold` strokes, quantiles."""
  counts = np.array([d.sketch.num_strokes for d in drawings])
  return {"sketches": int(len(counts)),
          f"share_at_most_{threshold}_strokes": float(np.mean(counts <= threshold)),
          "mean": float(counts.mean()), "median": float(np.median(counts)),
          "p95": float(np.percentile(counts, 95)), "max": int(counts.max()),
          "histogram": {int(k): int(v) for k, v in zip(*np.unique(counts, return_counts=True))}}


def explain_all(explainer: Explainer, drawings: Sequence[Drawing],
                config: ml_collections.ConfigDict) -> list[dict]:
  """Per-sketch results (numpy) of every drawing, in batches."""
  key = jax.random.key(config.seed)
  results = []
  batch_size = config.attribution.batch_size
  for start in range(0, len(drawings), batch_size):
    chunk = drawings[start:start + batch_size]
    arrays = explainer.prepare(chunk)
    labels = np.array([explainer.class_names.index(d.word) for d in chunk], np.int32)
    targets = labels if config.attribution.target == "label" else np.full_like(labels, -1)
    keys = jax.random.split(jax.random.fold_in(key, start), len(chunk))
    out = jax.device_get(explainer.explain(arrays, jnp.asarray(targets), keys))
    for i, drawing in enumerate(chunk):
      results.append({"drawing": drawing, "label": int(labels[i]),
                      **{k: np.asarray(v[i]) for k, v in out.items()}})
    logging.info("explained %d / %d sketches", len(results), len(drawings))
  return results


def _record(result: dict, explainer: Explainer) -> dict:
  """JSON record of one sketch."""
  drawing, n = result["drawing"], result["drawing"].sketch.num_strokes
  record = {"word": drawing.word, "key_id": str(drawing.key_id), "num_strokes": n,
            "label": explainer.class_names[result["label"]],
            "target": explainer.class_names[int(result["target"])],
            "score": float(result["score"]), "blank_score": float(result["blank_score"]),
            "attributions": {m: result[m][:n].tolist() for m in explainer.methods}}
  for name in (*explainer.methods, *BASELINE_ORDERS):
    record.setdefault("deletion_auc", {})[name] = float(result[f"deletion_auc/{name}"])
    record.setdefault("insertion_auc", {})[name] = float(result[f"insertion_auc/{name}"])
  if "psla_ig" in result:
    stroke_of = result["segment_stroke"]
    record["psla_ig_per_segment"] = [result["psla_ig"][stroke_of == k].tolist() for k in range(n)]
    record["point_grad"] = [result["point_grad"][k, :len(s)].tolist()
                            for k, s in enumerate(drawing.sketch.strokes)]
  return record


def faithfulness_summary(results: Sequence[dict], explainer: Explainer) -> dict:
  """Mean (and standard error) deletion / insertion areas per method, IG completeness."""
  summary = {"sketches": len(results), "target": None, "methods": {}}
  for name in (*explainer.methods, *BASELINE_ORDERS):
    entry = {}
    for curve in ("deletion_auc", "insertion_auc"):
      values = np.array([r[f"{curve}/{name}"] for r in results])
      entry[curve] = float(values.mean())
      entry[f"{curve}_stderr"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(
          values) > 1 else 0.0
    summary["methods"][name] = entry
  ig = "sla_ig" if "sla_ig" in explainer.methods else "gate_ig"
  gaps = np.array([float(r["score"] - r["blank_score"]) for r in results])
  errors = np.array([abs(float(r[ig].sum()) - g) for r, g in zip(results, gaps)])
  summary["completeness"] = {"method": ig, "mean_abs_error": float(errors.mean()),
                             "mean_abs_gap": float(np.abs(gaps).mean())}
  return summary


# --- figures --------------------------------------------------------------------------------


def draw_signed(ax, strokes, values, title):
  """Strokes float[n_k, 2] coloured by their signed values (blue < 0 < red, limits
  symmetric per sketch), y down as drawn."""
  limit = max(float(np.abs(values).max()), 1e-9)
  norm = matplotlib.colors.Normalize(-limit, limit)
  for stroke, value in zip(strokes, values):
    color = plt.cm.RdBu_r(norm(value))
    style = "o" if len(stroke) == 1 else "-"
    ax.plot(stroke[:, 0], stroke[:, 1], style, color=color, linewidth=2.5, markersize=3,
            solid_capstyle="round")
  ax.set_aspect("equal")
  ax.invert_yaxis()
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=7)


def save_stroke_figure(results, explainer, method: str, path: pathlib.Path, count: int) -> None:
  """Strokes coloured by signed attribution (blue < 0 < red, symmetric per sketch)."""
  chosen = results[:count]
  columns = min(len(chosen), 8)
  rows = -(-len(chosen) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows), squeeze=False)
  for ax in axes.flat[len(chosen):]:
    ax.axis("off")
  for ax, result in zip(axes.flat, chosen):
    strokes = explainer.strokes_of(result["drawing"])
    draw_signed(ax, strokes, result[method][:len(strokes)],
                 f"{explainer.class_names[int(result['target'])]}\n({result['drawing'].word})")
  fig.suptitle(f"{method}: red raises the target score, blue lowers it", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_psla_figure(results, explainer, path: pathlib.Path, count: int) -> None:
  """P-SLA per segment (signed, diverging) above point-gradient heat (per point) for each sketch."""
  chosen = results[:count]
  fig, axes = plt.subplots(2, len(chosen), figsize=(1.9 * len(chosen), 4.0), squeeze=False)
  for column, result in enumerate(chosen):
    strokes = explainer.strokes_of(result["drawing"])
    psla, stroke_of = result["psla_ig"], result["segment_stroke"]
    limit = max(float(np.abs(psla).max()), 1e-9)
    ax = axes[0, column]
    for k, stroke in enumerate(strokes):
      values = psla[stroke_of == k]
      ends = stroke if len(stroke) > 1 else np.repeat(stroke, 2, axis=0)
      for g, value in enumerate(values):
        ax.plot(ends[g:g + 2, 0], ends[g:g + 2, 1], "-o" if len(stroke) == 1 else "-",
                color=plt.cm.RdBu_r(0.5 + 0.5 * value / limit), linewidth=2.5, markersize=3,
                solid_capstyle="round")
    ax.set_title(f"P-SLA {result['drawing'].word}", fontsize=7)
    ax = axes[1, column]
    heat = result["point_grad"]
    top = max(float(heat.max()), 1e-9)
    for k, stroke in enumerate(strokes):
      ax.plot(stroke[:, 0], stroke[:, 1], "-", color="0.85", linewidth=1)
      ax.scatter(stroke[:, 0], stroke[:, 1], c=heat[k, :len(stroke)], cmap="magma_r", vmin=0,
                 vmax=top, s=10)
    ax.set_title("|d score / d point|", fontsize=7)
    for ax in axes[:, column]:
      ax.set_aspect("equal")
      ax.invert_yaxis()
      ax.set_xticks([])
      ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_curve_figure(results, explainer, path: pathlib.Path) -> None:
  """Mean deletion and insertion curves (target probability vs share of strokes)."""
  grid = np.linspace(0, 1, 21)
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for ax, curve in zip(axes, ("deletion", "insertion")):
    for name in (*explainer.methods, *BASELINE_ORDERS):
      resampled = []
      for r in results:
        values = r[f"{curve}/{name}"]
        n = min(r["drawing"].sketch.num_strokes, len(values) - 1)
        resampled.append(np.interp(grid, np.arange(n + 1) / max(n, 1), values[:n + 1]))
      auc = np.mean([r[f"{curve}_auc/{name}"] for r in results])
      ax.plot(grid, np.mean(resampled, 0), "--" if name in BASELINE_ORDERS else "-",
              label=f"{name} ({auc:.3f})")
    ax.set_xlabel(f"share of strokes {'removed' if curve == 'deletion' else 'drawn'}")
    ax.set_ylabel("target probability")
    ax.set_title(f"{curve} (area)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_order_similarity(params, path: pathlib.Path, rows: int = 16) -> None:
  """Spec A.4: cosine similarity of order-embedding rows 1..16, one 4x4 panel per row."""
  table = np.asarray(params["order"]["embedding"])[1:rows + 1]
  unit = table / np.linalg.norm(table, axis=1, keepdims=True)
  similarity = unit @ unit.T
  side = int(np.sqrt(rows))
  fig, axes = plt.subplots(side, side, figsize=(6, 6))
  for i, ax in enumerate(axes.flat):
    image = ax.imshow(similarity[i].reshape(side, side), vmin=-1, vmax=1, cmap="viridis")
    ax.set_title(f"stroke {i + 1}", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.colorbar(image, ax=axes, shrink=0.6, label="cosine similarity")
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Explains `config.data` with `config.model`; writes the files listed in the module doc."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  explainer, vector_params = build_explainer(config)
  drawings, everything = load_drawings(config, explainer.class_names)
  counts = stroke_count_stats(everything)
  (workdir / "stroke_counts.json").write_text(json.dumps(counts, indent=1))
  logging.info("%d sketches read, %.2f%% with <= 10 strokes; explaining %d", counts["sketches"],
               100 * counts["share_at_most_10_strokes"], len(drawings))
  results = explain_all(explainer, drawings, config)
  (workdir / "attributions.json").write_text(
      json.dumps([_record(r, explainer) for r in results]))
  summary = faithfulness_summary(results, explainer)
  summary["target"] = config.attribution.target
  summary["model"] = {"kind": config.model.kind, "path": str(config.model.path)}
  (workdir / "faithfulness.json").write_text(json.dumps(summary, indent=1))
  count = config.figures.sketches
  for method in explainer.methods:
    save_stroke_figure(results, explainer, method, workdir / f"strokes_{method}.png", count)
  if "psla_ig" in results[0]:
    save_psla_figure(results, explainer, workdir / "psla.png", min(count, 6))
  save_curve_figure(results, explainer, workdir / "deletion_curves.png")
  if vector_params is not None and "order" in vector_params:
    save_order_similarity(vector_params, workdir / "order_similarity.png")
  print(json.dumps({k: summary[k] for k in ("sketches", "methods", "completeness")}))
  return summary
