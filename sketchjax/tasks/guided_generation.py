"""Attribution of generated drawings, and attribution-guided generation (issue 13, section 3).

`run(config, workdir)`, for every class of `config.model_dir` (sketch-rnn generators):
  samples  `per_class` x K plain drawings (K = rounds + 1, or (rounds + 1)(ig_steps + 1)
           with `compute_matched`), scored by every classifier;
  explains the first sample of each (the guided arm's round 0) under each guide: SLA of
           the class's log-probability, which strokes help, hurt or are ignored
           (|SLA| < 5% of the drawing's attribution mass), by stroke position;
  guides   for each direction `guide>judge`, the guided arm of
           sketchjax/methods/guided_generation.py from those first samples, against
           plain single samples and plain best-of-j by the guide (j = 1..K), all
           judged by the classifier that did not guide.
Classifiers (`config.classifiers`), each restricted to the generators' classes:
`doodlenet` (pretrained on real drawings, 345 classes) and `raster` (a raster_cnn
workdir of the classify task, e.g. trained on sketch-rnn samples). Writes
  summary.json      per direction: recognition by the judge (and the guide) of every
                    arm, the calls each spent, per class; per guide: the attribution
                    of generated strokes by position and by class;
  drawings.json     per direction and drawing: the start and guided drawings (drawing
                    units), SLA of the start, probabilities;
  generated_sla_<guide>.png, guided_<guide>_to_<judge>.png, calls_<guide>_to_<judge>.png
                    (sketchjax/tasks/guided_generation_figures.py).
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.methods import assisted_drawing, guided_generation as gg
from sketchjax.methods.drawing_scorer import DrawingScorer
from sketchjax.models import raster_classifier, sketch_rnn
from sketchjax.tasks import attribution as attribution_task
from sketchjax.tasks import classify, guided_generation_figures as figures
from sketchjax.tasks.sketch_rnn_samples import generator_files
from sketchjax.training.progress import format_duration

CLASSIFIERS = ("doodlenet", "raster")
NOISE_FRACTION = 0.05  # |SLA| below this share of a drawing's attribution mass: ignored
POSITIONS = 6  # stroke positions tabulated one by one; later ones pooled


def parse_directions(text: str) -> list[tuple[str, str]]:
  """"a>b,c>d" -> [(guide, judge), ...]; each a known classifier, guide != judge."""
  directions = []
  for part in [p.strip() for p in text.split(",") if p.strip()]:
    guide, _, judge = part.partition(">")
    if guide not in CLASSIFIERS or judge not in CLASSIFIERS or guide == judge:
      raise ValueError(f"direction {part!r}: expected guide>judge, two different classifiers "
                       f"of {CLASSIFIERS}")
    directions.append((guide, judge))
  if not directions:
    raise ValueError("config.directions names no guide>judge pair")
  return directions


def class_index(names: Sequence[str], classes: Sequence[str], where: str) -> list[int]:
  """The classifier's output of each class (spellings with "_" or " " match)."""
  spelled = [n.replace("_", " ") for n in names]
  missing = [c for c in classes if c not in spelled]
  if missing:
    raise ValueError(f"{where} has no class {missing}; the generators' classes must all be "
                     "among its classes")
  return [spelled.index(c) for c in classes]


def load_scorer(name: str, config: ml_collections.ConfigDict,
                classes: Sequence[str]) -> DrawingScorer:
  """`doodlenet` (TF.js folder) or `raster` (raster_cnn workdir), restricted to `classes`."""
  path = config.classifiers[name]
  common = {"ig_steps": config.ig_steps, "batch_size": config.batch_size}
  if name == "doodlenet":
    image_logits, names, settings = attribution_task.doodlenet_on_soft_images(
        path, config.supersample)
    return DrawingScorer(jax.vmap(image_logits), class_index(names, classes, path), settings,
                         sr.official_pixels, **common)
  model, params, names, _ = classify.load_trained(path)
  if not isinstance(model, raster_classifier.RasterClassifier):
    raise ValueError(f"{path} holds a {type(model).__name__}; classifiers.raster needs a "
                     "workdir trained with model.kind=raster_cnn")
  images_logits, settings, to_pixels = attribution_task.raster_cnn_on_soft_images(
      model, params, config.supersample)
  return DrawingScorer(images_logits, class_index(names, classes, path), settings, to_pixels,
                       **common)


def _recognition(probabilities: np.ndarray, target: np.ndarray) -> dict:
  """probabilities float[N, K], targets int[N] -> accuracy, its stderr, mean target prob."""
  correct = probabilities.argmax(-1) == target
  p = probabilities[np.arange(len(target)), target]
  return {"accuracy": float(correct.mean()),
          "accuracy_stderr": float(correct.std(ddof=1) / np.sqrt(len(correct)))
          if len(correct) > 1 else 0.0,
          "target_probability": float(p.mean()), "drawings": int(len(correct))}


def _cat_guided(rows: Sequence[dict], field: str) -> np.ndarray:
  return np.concatenate([getattr(r["guided"], field) for r in rows])


def summarize_direction(rows: Sequence[dict], k: int, big_k: int) -> dict:
  """Recognition by the judge (and the guide) of every arm, calls, and per class.

  rows: one per class, each with `target`, `plain_guide` float[D, K'] (the guide's target
  probability of each plain sample), `plain_judge` float[D, K', C], `plain_guide_all`
  float[D, K', C], `guided_judge` float[R + 1, D, C], `guided_guide` float[D, C] and the
  `GuidedResult` as `guided`.
  """
  target = np.concatenate([np.full(len(r["plain_guide"]), r["target"]) for r in rows])
  cat = lambda key: np.concatenate([r[key] for r in rows])
  plain_guide, plain_judge, plain_all = cat("plain_guide"), cat("plain_judge"), cat(
      "plain_guide_all")
  drawings = np.arange(len(target))
  out = {"plain_single_all_samples": _recognition(
             plain_judge.reshape(-1, plain_judge.shape[-1]), np.repeat(target, big_k)),
         "plain_single": _recognition(plain_judge[:, 0], target)}
  for j in sorted({*range(1, k + 1), big_k}):
    chosen = gg.best_of(plain_guide, j)
    out[f"plain_best_of_{j}"] = {**_recognition(plain_judge[drawings, chosen], target),
                                 "guide": _recognition(plain_all[drawings, chosen], target),
                                 "generator_samples": j, "guide_evaluations": j}
  history = np.concatenate([r["guided_judge"] for r in rows], axis=1)  # [R + 1, N, C]
  samples = np.concatenate([r["guided"].generator_samples for r in rows])
  evaluations = np.concatenate([r["guided"].guide_evaluations for r in rows])
  for r in range(len(history)):
    out[f"guided_round_{r}"] = _recognition(history[r], target)
  final_correct = history[-1].argmax(-1) == target
  chosen = gg.best_of(plain_guide, k)
  plain_correct = plain_judge[drawings, chosen].argmax(-1) == target
  out["guided"] = {**_recognition(history[-1], target),
                   "guide": _recognition(cat("guided_guide"), target),
                   "generator_samples_mean": float(samples.mean()),
                   "generator_samples_max": int(samples.max()),
                   "guide_evaluations_mean": float(evaluations.mean()),
                   "guide_evaluations_max": int(evaluations.max()),
                   "rounds_accepted_mean": float(np.mean(_cat_guided(rows, "accepted"))),
                   "strokes_resampled_mean": float(np.mean(_cat_guided(rows, "resampled_strokes"))),
                   f"wins_over_plain_best_of_{k}": int(np.sum(final_correct & ~plain_correct)),
                   f"losses_to_plain_best_of_{k}": int(np.sum(~final_correct & plain_correct))}
  out["accounting"] = (
      f"plain best-of-{k}: {k} fresh samples and {k} guide evaluations (one forward pass "
      f"each) a drawing; guided: at most {k} generator samples (1 fresh + up to {k - 1} "
      f"continuations) and at most {k} guide evaluations (SLA, ig_steps forward+backward "
      f"passes each) a drawing, on average {samples.mean():.2f} and {evaluations.mean():.2f}; "
      f"plain best-of-{big_k} matches the guided arm's guide forward passes")
  out["per_class"] = {r["name"]: {
      "plain_single": _recognition(r["plain_judge"][:, 0], np.full(len(r["plain_guide"]),
                                                                   r["target"]))["accuracy"],
      f"plain_best_of_{k}": _recognition(
          r["plain_judge"][np.arange(len(r["plain_guide"])), gg.best_of(r["plain_guide"], k)],
          np.full(len(r["plain_guide"]), r["target"]))["accuracy"],
      "guided": _recognition(r["guided_judge"][-1], np.full(len(r["plain_guide"]),
                                                            r["target"]))["accuracy"]}
      for r in rows}
  return out


def summarize_attribution(rows: Sequence[dict]) -> dict:
  """Which generated strokes make the class and which the classifier ignores: per stroke
  position (1..POSITIONS, then pooled) and per third of the drawing, the share of strokes
  that help (SLA > 0), hurt (< 0) or are ignored (|SLA| < NOISE_FRACTION of the drawing's
  attribution mass), and the share of the positive attribution; per class the same with
  the classifier's accuracy on the drawings.

  rows: one per class with `name`, `target`, `sla` (list of float[n_k]) and `probabilities`
  float[D, K] of the start drawings.
  """
  by_position: dict[str, list] = {}
  by_third: dict[str, list] = {}
  per_class = {}
  for row in rows:
    labels_all = []
    for values in row["sla"]:
      if not len(values):
        continue
      labels = assisted_drawing.stroke_labels(values, NOISE_FRACTION)
      labels_all += labels
      positive = np.clip(values, 0, None)
      share = positive / max(float(positive.sum()), 1e-12)
      for k, (label, value) in enumerate(zip(labels, share)):
        position = str(k + 1) if k < POSITIONS else f">{POSITIONS}"
        third = ("first", "middle", "last")[min(3 * k // len(values), 2)]
        by_position.setdefault(position, []).append((label, value))
        by_third.setdefault(third, []).append((label, value))
    correct = row["probabilities"].argmax(-1) == row["target"]
    per_class[row["name"]] = {
        "drawings": len(row["sla"]), "accuracy": float(correct.mean()),
        "mean_strokes": float(np.mean([len(v) for v in row["sla"]])),
        **{f"share_{name}": float(np.mean([l == name for l in labels_all]))
           for name in ("helps", "hurts", "noise")},
        "share_negative": float(np.mean(np.concatenate(row["sla"]) < 0))}

  def table(groups):
    return {key: {"strokes": len(items),
                  **{f"share_{name}": float(np.mean([l == name for l, _ in items]))
                     for name in ("helps", "hurts", "noise")},
                  "mean_share_of_positive_attribution": float(np.mean([v for _, v in items]))}
            for key, items in groups.items()}

  everything = np.concatenate([np.concatenate(r["sla"]) for r in rows])
  labels = [l for g in by_position.values() for l, _ in g]
  return {"strokes": int(len(everything)),
          "share_negative": float(np.mean(everything < 0)),
          **{f"share_{name}": float(np.mean([l == name for l in labels]))
             for name in ("helps", "hurts", "noise")},
          "noise_fraction": NOISE_FRACTION,
          "by_position": dict(sorted(table(by_position).items(),
                                     key=lambda kv: int(kv[0].lstrip(">")) + (kv[0][0] == ">"))),
          "by_third": table(by_third), "per_class": per_class}


def _as_lists(drawing: Sequence[np.ndarray]) -> list:
  return [np.round(np.asarray(s, np.float64), 2).tolist() for s in drawing]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Entry point: writes the files listed in the module docstring."""
  if config.per_class < 1 or config.rounds < 0:
    raise ValueError(f"per_class must be >= 1 and rounds >= 0, got {config.per_class} and "
                     f"{config.rounds}")
  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  directions = parse_directions(config.directions)
  files = generator_files(config.model_dir, config.classes)
  classes = list(files)
  used = sorted({name for pair in directions for name in pair})
  scorers = {name: load_scorer(name, config, classes) for name in used}
  k = config.rounds + 1
  big_k = k * (config.ig_steps + 1) if config.compute_matched else k
  size = config.per_class
  rng = jax.random.key(config.seed)
  rows = {pair: [] for pair in directions}
  attributions = {guide: [] for guide, _ in directions}
  start_time = time.monotonic()
  for t, (name, path) in enumerate(files.items()):
    generator = sketch_rnn.load_generator(path)
    key = jax.random.fold_in(rng, t)
    plain = gg.sample_drawings(generator, jax.random.fold_in(key, 0), size * big_k,
                               config.temperature)
    probabilities = {n: s.probabilities(plain).reshape(size, big_k, -1)
                     for n, s in scorers.items()}
    starts = plain[::big_k]
    for d, (guide, judge) in enumerate(directions):
      guided = gg.guided_generation(generator, scorers[guide], starts, t, config.rounds,
                                    jax.random.fold_in(key, 1 + d), config.temperature)
      rows[(guide, judge)].append({
          "name": name, "target": t, "starts": starts, "guided": guided,
          "plain_guide": probabilities[guide][..., t],
          "plain_guide_all": probabilities[guide],
          "plain_judge": probabilities[judge],
          "guided_judge": np.stack([scorers[judge].probabilities(h) for h in guided.history]),
          "guided_guide": scorers[guide].probabilities(guided.drawings)})
      if len(attributions[guide]) <= t:
        attributions[guide].append({"name": name, "target": t, "sla": guided.start_sla,
                                    "starts": starts,
                                    "probabilities": probabilities[guide][:, 0]})
    elapsed = time.monotonic() - start_time
    logging.info("guided generation: %s done | class %d/%d | ETA %s", name, t + 1, len(files),
                 format_duration(elapsed / (t + 1) * (len(files) - t - 1)))
  summary = {"classes": classes, "per_class": size, "rounds": config.rounds,
             "ig_steps": config.ig_steps, "temperature": config.temperature,
             "seed": config.seed, "classifiers": {n: config.classifiers[n] for n in used},
             "directions": {}, "attribution": {},
             "seconds": None}
  for (guide, judge), direction_rows in rows.items():
    label = f"{guide}>{judge}"
    summary["directions"][label] = summarize_direction(direction_rows, k, big_k)
    figures.save_guided_examples(direction_rows, classes, out / f"guided_{guide}_to_{judge}.png",
                                 config.figures.classes)
    figures.save_call_curves(summary["directions"][label], k, big_k,
                             out / f"calls_{guide}_to_{judge}.png", label)
  for guide, attribution_rows in attributions.items():
    summary["attribution"][guide] = summarize_attribution(attribution_rows)
    figures.save_attribution_grid(attribution_rows, out / f"generated_sla_{guide}.png",
                                  config.figures.per_class, guide)
  summary["seconds"] = time.monotonic() - start_time
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  (out / "drawings.json").write_text(json.dumps({
      f"{guide}>{judge}": [{
          "class": r["name"], "start": _as_lists(r["starts"][b]),
          "guided": _as_lists(r["guided"].drawings[b]),
          "start_sla": r["guided"].start_sla[b].tolist(),
          "guide_probability": float(r["guided"].guide_probability[b]),
          "judge_probability_start": float(r["guided_judge"][0, b, r["target"]]),
          "judge_probability_guided": float(r["guided_judge"][-1, b, r["target"]])}
          for r in direction_rows for b in range(size)]
      for (guide, judge), direction_rows in rows.items()}))
  print(json.dumps({label: {arm: d[arm]["accuracy"] for arm in
                            ("plain_single", f"plain_best_of_{k}", f"plain_best_of_{big_k}",
                             "guided")}
                    for label, d in summary["directions"].items()}))
  return summary
