"""Stroke-level adversarial attacks and noisy-stroke filtering of a sketch classifier.

`run(config, workdir)` attacks the prediction of `config.model` (doodleNet, or a
classify workdir: the raster CNN or SketchXAINet) on held-out QuickDraw drawings read
as the attribution task reads them (`config.data`; with `data.noise_strokes` = k each
gets k strokes of drawings of other classes, known noise for the filter), every attack
of sketchjax/methods/raster_attack.py (raster models) or vector_attack.py (SketchXAINet,
through sketchjax/tasks/stroke_attack_vector.py) on every drawing, and writes:
  attacks.json       per sketch: class, prediction, each attack's outcome and cost,
                     the filters' predictions, SLA per stroke;
  summary.json       success rates against the budgets (share of ink length removed,
                     strokes touched, displacement radius in canvas units) and the
                     filtering accuracies (`summarize`), of all sketches and of the
                     correctly classified ones;
  adversarial.npz    the attacked sketches (`save_adversarial`);
  attack_examples.png, attack_budgets.png  (sketchjax/tasks/stroke_attack_figures.py).
Canvas units are the drawing's own (0..255 for simplified QuickDraw).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Callable, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from sketchjax.data import soft_rasterize as sr
from sketchjax.data.records import Drawing
from sketchjax.sketch.sketch import Sketch
from sketchjax.methods import noisy_strokes, raster_attack, vector_attack
from sketchjax.models import raster_classifier
from sketchjax.tasks import attribution as attribution_task
from sketchjax.tasks import classify
from sketchjax.tasks import attack_batches, stroke_attack_figures, stroke_attack_vector

INK_BUDGETS = (0.05, 0.1, 0.2, 0.3, 0.5)  # shares of the ink length
STROKE_BUDGETS = (1, 2, 3)  # strokes touched


@dataclasses.dataclass(frozen=True)
class RasterModel:
  """image_logits: float32[size, size] ink -> logits [C]; to_pixels: strokes -> pixel
  polylines of the model's input."""

  image_logits: Callable[[jax.Array], jax.Array]
  class_names: tuple[str, ...]
  settings: sr.RasterSettings
  to_pixels: Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def load_raster_model(config: ml_collections.ConfigDict) -> RasterModel:
  """doodleNet (`model.kind=doodlenet`) or a raster CNN workdir (`model.kind=checkpoint`)."""
  kind, path = _kind_and_path(config)
  if kind == "doodlenet":
    logits, names, settings = attribution_task.doodlenet_on_soft_images(
        path, config.raster.supersample)
    return RasterModel(logits, tuple(names), settings, sr.official_pixels)
  model, params, names, _ = classify.load_trained(path)
  return raster_checkpoint(model, params, names, config.raster.supersample, path)


def _kind_and_path(config: ml_collections.ConfigDict) -> tuple[str, str]:
  kind, path = config.model.kind, config.model.path
  if not path:
    raise ValueError("set --config.model.path: the doodleNet folder (model.json) for "
                     "model.kind=doodlenet, or a raster_cnn or SketchXAINet workdir for "
                     "model.kind=checkpoint")
  if kind not in ("doodlenet", "checkpoint"):
    raise ValueError(f"unknown model.kind {kind!r}; expected 'doodlenet' or 'checkpoint'")
  return kind, path


def raster_checkpoint(model: Any, params: Any, names: Sequence[str], supersample: int,
                      path: str) -> RasterModel:
  """The raster CNN of a classify workdir, fed by the soft rasteriser."""
  if not isinstance(model, raster_classifier.RasterClassifier):
    raise ValueError(f"{path} holds a {type(model).__name__}: the raster attacks need a raster "
                     "model (doodleNet, or a workdir trained with model.kind=raster_cnn)")
  images_logits, settings, to_pixels = attribution_task.raster_cnn_on_soft_images(
      model, params, supersample)
  return RasterModel(lambda image: images_logits(image[None])[0], tuple(names), settings,
                     to_pixels)


@dataclasses.dataclass(frozen=True)
class Attacker:
  """A model ready to attack: its classes, the removal orders of its results (and the
  figure's name of its segment attack), and `attack_all(drawings, config)` -> per-sketch
  results."""

  class_names: tuple[str, ...]
  stroke_orders: tuple[str, ...]
  segment_orders: tuple[str, ...]
  segment_title: str
  attack_all: Callable[[Sequence[Drawing], ml_collections.ConfigDict], list[dict[str, Any]]]


def load_attacker(config: ml_collections.ConfigDict) -> Attacker:
  """doodleNet, or a classify workdir: raster CNN (raster attacks) or SketchXAINet (vector
  attacks, `stroke_attack_vector`)."""
  kind, path = _kind_and_path(config)
  if kind == "doodlenet":
    raster = load_raster_model(config)
  else:
    model, params, names, trained = classify.load_trained(path)
    if not isinstance(model, raster_classifier.RasterClassifier):
      tokenizer = classify.tokenizer_config(trained)
      return Attacker(tuple(names), vector_attack.VECTOR_STROKE_ORDERS,
                      vector_attack.VECTOR_SEGMENT_ORDERS, "segment-IG tails",
                      functools.partial(stroke_attack_vector.attack_all, model, params,
                                        tuple(names), tokenizer))
    raster = raster_checkpoint(model, params, names, config.raster.supersample, path)
  return Attacker(raster.class_names, raster_attack.STROKE_ORDERS, raster_attack.SEGMENT_ORDERS,
                  "P-SLA segments", functools.partial(attack_all, raster))


def pixels_per_unit(strokes: Sequence[np.ndarray], pixels: Sequence[np.ndarray]) -> float:
  """How many model pixels one drawing unit is: the longer side of the pixel bounding box over
  that of the drawing's (1 for a drawing that is a single point)."""
  side = lambda s: float(np.ptp(np.concatenate(s), axis=0).max())
  return side(pixels) / side(strokes) if side(strokes) > 0 else 1.0


def attack_all(model: RasterModel, drawings: Sequence[Drawing], config: ml_collections.ConfigDict
               ) -> list[dict[str, Any]]:
  """Per-sketch results (numpy, `raster_attack.attack_sketch` plus label, scale and the pixel
  polylines) in the order of `drawings`; batches of similar size share a compiled shape."""
  attack = raster_attack.AttackSettings(**config.attack.settings.to_dict())
  radii_units = np.asarray(config.attack.radii, np.float32)
  settings = model.settings

  @functools.partial(jax.jit, static_argnames=("num_segments", "num_pairs", "pgd_pairs"))
  def attack_batch(xy, lens, labels, radii, keys, num_segments, num_pairs, pgd_pairs):
    one = lambda args: raster_attack.attack_sketch(
        model.image_logits, *args, settings, attack, num_segments=num_segments,
        num_pairs=num_pairs, pgd_pairs=pgd_pairs)
    return jax.lax.map(one, (xy, lens, labels, radii, keys),
                       batch_size=config.attack.sketches_at_once)

  pixels = [model.to_pixels(d.sketch.strokes) for d in drawings]
  key = jax.random.key(config.seed)
  results: list[dict[str, Any] | None] = [None] * len(drawings)
  for start, chosen in attack_batches.size_sorted_batches(
      [sum(len(s) for s in p) for p in pixels], config.attack.batch_size):
    xy, lens, num_segments = sr.pad_batch([pixels[i] for i in chosen])
    scale = np.array([pixels_per_unit(drawings[i].sketch.strokes, pixels[i]) for i in chosen],
                     np.float32)
    radii = scale[:, None] * radii_units[None, :]
    grown = dataclasses.replace(settings, line_width=settings.line_width + 2 * float(radii.max()))
    labels = np.array([model.class_names.index(drawings[i].word) for i in chosen], np.int32)
    out = jax.device_get(attack_batch(
        xy, lens, labels, radii, jax.random.split(jax.random.fold_in(key, start), len(chosen)),
        num_segments=num_segments, num_pairs=sr.tile_pair_budget(xy, lens, settings),
        pgd_pairs=sr.tile_pair_budget(xy, lens, grown)))
    attack_batches.fill_results(results, chosen, drawings, labels, scale, xy, lens, out)
  return results


def _removal_summary(results, unit: str, orders: Sequence[str], touched: str) -> dict:
  summary = {}
  for o, name in enumerate(orders):
    success = np.array([r[f"{unit}/success"][o] for r in results])
    share = np.array([r[f"{unit}/cost_share"][o] for r in results])
    strokes = np.array([r[touched][o] for r in results])
    summary[name] = {
        "success": float(success.mean()),
        "success_at_ink": {str(b): float(np.mean(success & (share <= b))) for b in INK_BUDGETS},
        "success_at_strokes": {str(m): float(np.mean(success & (strokes <= m)))
                               for m in STROKE_BUDGETS},
        "median_ink_share_of_successes": float(np.median(share[success])) if success.any()
                                         else None,
        "mean_strokes_touched_of_successes": float(strokes[success].mean()) if success.any()
                                             else None}
    if unit == "segments":
      removed = np.array([r["segments/removed"][o] for r in results])
      summary[name]["mean_segments_removed_of_successes"] = (
          float(removed[success].mean()) if success.any() else None)
  return summary


def summarize(results: Sequence[dict], radii_units: Sequence[float], noise: int = 0,
              orders: tuple[Sequence[str], Sequence[str]] = (raster_attack.STROKE_ORDERS,
                                                             raster_attack.SEGMENT_ORDERS)
              ) -> dict:
  """Success rates against the budgets of every attack (removal `orders`: of strokes, of
  segments), and the filtering accuracies (and, with `noise` strokes added to every
  drawing, the share of them each filter drops)."""
  correct = np.array([r["prediction"] == r["label"] for r in results])
  pgd = {}
  for k, radius in enumerate(radii_units):
    success = np.array([r["pgd/success"][k] for r in results])
    scale = np.array([r["scale"] for r in results])
    mean_shift = np.array([r["pgd/mean_shift"][k] for r in results]) / scale
    max_shift = np.array([r["pgd/max_shift"][k] for r in results]) / scale
    pgd[str(float(radius))] = {
        "success": float(success.mean()),
        "random_success": float(np.mean([r["random/success"][k] for r in results])),
        "mean_shift_of_successes": float(mean_shift[success].mean()) if success.any() else None,
        "max_shift_of_successes": float(max_shift[success].mean()) if success.any() else None}
  dropped = np.array([r["filter/dropped"] for r in results])
  changed = dropped > 0
  filtering = {"strokes_dropped_mean": float(dropped.mean()),
               "sketches_with_a_stroke_dropped": float(changed.mean()),
               "accuracy_before": float(correct.mean()),
               "accuracy_before_where_dropped": float(correct[changed].mean()) if changed.any()
                                                else None}
  for f, name in enumerate(noisy_strokes.FILTERS):
    after = np.array([r["filter/correct"][f] for r in results])
    filtering[f"accuracy_{name}"] = float(after.mean())
    filtering[f"accuracy_{name}_where_dropped"] = (float(after[changed].mean()) if changed.any()
                                                   else None)
    filtering[f"fixed_{name}"] = int(np.sum(after & ~correct))  # wrong before, right after
    filtering[f"broken_{name}"] = int(np.sum(~after & correct))
    if noise:  # the added strokes are each drawing's last `noise`
      dropped_noise = [~r["filter/keep"][f][r["drawing"].sketch.num_strokes - noise:
                                            r["drawing"].sketch.num_strokes] for r in results]
      filtering[f"added_strokes_dropped_{name}"] = float(np.mean(dropped_noise))
  return {"sketches": len(results), "accuracy": float(correct.mean()),
          "strokes": _removal_summary(results, "strokes", orders[0], "strokes/removed"),
          "segments": _removal_summary(results, "segments", orders[1],
                                       "segments/strokes_touched"),
          "pgd": pgd, "filter": filtering}


def _record(result: dict, class_names: Sequence[str], radii_units: Sequence[float],
            orders: tuple[Sequence[str], Sequence[str]]) -> dict:
  """JSON record of one sketch."""
  n = result["drawing"].sketch.num_strokes
  removal = lambda unit, orders: {name: {
      "success": bool(result[f"{unit}/success"][o]), "removed": int(result[f"{unit}/removed"][o]),
      "ink_share": float(result[f"{unit}/cost_share"][o]),
      "prediction": class_names[int(result[f"{unit}/prediction"][o])]}
      for o, name in enumerate(orders)}
  return {
      "word": result["drawing"].word, "key_id": str(result["drawing"].key_id), "num_strokes": n,
      "prediction": class_names[int(result["prediction"])],
      "sla": result["sla"][:n].tolist(), "sla_label": result["sla_label"][:n].tolist(),
      "strokes": removal("strokes", orders[0]),
      "segments": removal("segments", orders[1]),
      "pgd": {str(float(radius)): {
          "success": bool(result["pgd/success"][k]),
          "random_success": bool(result["random/success"][k]),
          "prediction": class_names[int(result["pgd/prediction"][k])],
          "mean_shift": float(result["pgd/mean_shift"][k] / result["scale"]),
          "max_shift": float(result["pgd/max_shift"][k] / result["scale"])}
          for k, radius in enumerate(radii_units)},
      "filter": {"dropped": int(result["filter/dropped"]),
                 **{name: class_names[int(result["filter/prediction"][f])]
                    for f, name in enumerate(noisy_strokes.FILTERS)}}}


ADVERSARIAL_KEYS = ("xy", "lens", "scale", "label", "prediction", "segment_stroke",
                    "strokes/removed_mask", "strokes/success", "segments/removed_mask",
                    "segments/success", "pgd/delta", "pgd/success", "pgd/prediction")


def save_adversarial(results: Sequence[dict], path: pathlib.Path) -> None:
  """The attacked sketches, padded to common shapes: `ADVERSARIAL_KEYS` stacked over sketches
  (polylines xy [B, S, P, 2] in the model's pixels, in canvas units for SketchXAINet; lens
  [B, S], the removal masks of every order [B, O, S] and [B, O, N], PGD displacements in the
  same units [B, R, S, P, 2], ...), for checks against other renderers."""
  def stack(name):
    values = [np.asarray(r[name]) for r in results]
    if values[0].ndim == 0:
      return np.stack(values)
    shape = np.max([v.shape for v in values], axis=0)
    padded = np.zeros((len(values), *shape), values[0].dtype)
    if name == "segment_stroke":
      padded -= 1
    for i, v in enumerate(values):
      padded[(i, *(slice(0, n) for n in v.shape))] = v
    return padded
  np.savez_compressed(path, **{name.replace("/", "__"): stack(name) for name in ADVERSARIAL_KEYS})


def add_strokes_of_other_classes(drawings: Sequence[Drawing], count: int,
                                 seed: int) -> list[Drawing]:
  """Each drawing with `count` strokes of drawings of other classes (chosen at random, kept at
  their place on the canvas) drawn after its own: known noise for the filters."""
  rng = np.random.default_rng(seed)
  noisy = []
  for drawing in drawings:
    others = [d for d in drawings if d.word != drawing.word]
    if not others:
      raise ValueError("data.noise_strokes needs drawings of at least two classes")
    added = []
    for _ in range(count):
      donor = others[rng.integers(len(others))].sketch.strokes
      added.append(donor[rng.integers(len(donor))])
    noisy.append(dataclasses.replace(drawing, sketch=Sketch((*drawing.sketch.strokes, *added))))
  return noisy


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Attacks `config.data` with `config.model`; writes the files listed in the module doc."""
  if not config.attack.radii or min(config.attack.radii) <= 0:
    raise ValueError(f"attack.radii must be positive canvas units, got {config.attack.radii}")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  attacker = load_attacker(config)
  drawings, _ = attribution_task.load_drawings(config, attacker.class_names)
  noise = config.data.noise_strokes
  if noise:
    drawings = add_strokes_of_other_classes(drawings, noise, config.seed)
  logging.info("attacking %d drawings", len(drawings))
  results = attacker.attack_all(drawings, config)
  radii = tuple(float(r) for r in config.attack.radii)
  orders = (attacker.stroke_orders, attacker.segment_orders)
  (workdir / "attacks.json").write_text(
      json.dumps([_record(r, attacker.class_names, radii, orders) for r in results]))
  save_adversarial(results, workdir / "adversarial.npz")
  summary = summarize(results, radii, noise, orders)
  correct = [r for r in results if r["prediction"] == r["label"]]
  summary["correctly_classified"] = summarize(correct, radii, noise, orders) if correct else None
  summary["model"] = {"kind": config.model.kind, "path": str(config.model.path)}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  stroke_attack_figures.save_examples(results, attacker.class_names, radii,
                                      workdir / "attack_examples.png", config.figures.sketches,
                                      attacker.segment_title)
  stroke_attack_figures.save_budget_curves(results, radii, workdir / "attack_budgets.png",
                                           orders)
  print(json.dumps(summary))
  return summary
