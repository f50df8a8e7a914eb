"""The pretrained doodleNet evaluated on the classify task's data, without training.

doodleNet (`model.path`, a TF.js folder such as ../shared/pretrained/doodlenet; trained
elsewhere on about 50,000 drawings a class of 345) reads the official 28 x 28 bitmaps:
each drawing is rendered with the official-settings soft rasteriser
(`soft_rasterize.render_official`; doodleNet's top-1 on these renders is 77.22% against
77.50% on the official bitmaps) and its 345 logits are restricted to the evaluated
classes, so top-1 / top-5 are the best among those classes only.

Drawings: `data.eval_dir` (every drawing of a folder of official files) or, when it is
empty, the test split of the configured data (`data.dir`, e.g. `qd16`: the 3,419 test
drawings the models trained on qd16 are evaluated on). Written to eval_<name>.json.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sketchjax.data import quickdraw_sources
from sketchjax.data import soft_rasterize as sr
from sketchjax.models import doodlenet
from sketchjax.sketch.sketch import from_stroke3
from sketchjax.training import progress

CHUNK = 256  # drawings rendered and classified at once


def restricted_columns(model_classes: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
  """int32[C]: the model's output index of each evaluated class; ValueError naming the
  classes the model does not know."""
  index = {name: i for i, name in enumerate(model_classes)}
  unknown = [name for name in class_names if name not in index]
  if unknown:
    raise ValueError(f"doodleNet has no class {unknown} (its {len(model_classes)} classes are "
                     "the official QuickDraw names, e.g. 'alarm clock')")
  return np.array([index[name] for name in class_names], np.int32)


def top_k_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """bool[B]: label among the k largest logits float[B, C] (ties broken by index)."""
  top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
  return np.any(top == labels[:, None], axis=-1)


def accuracy(hits: np.ndarray) -> tuple[float, float]:
  """(share of hits, its binomial standard error sqrt(p (1 - p) / n))."""
  p = float(np.mean(hits))
  return p, float(np.sqrt(p * (1 - p) / len(hits)))


def _drawings(config: ml_collections.ConfigDict, workdir: pathlib.Path,
              model_classes: Sequence[str]) -> tuple[list[dict], tuple[str, ...], str]:
  """(records, their class names, a name for the output file)."""
  if config.data.eval_dir:
    source, _ = quickdraw_sources.folder_source(config, model_classes)
    present = sorted({r["label"] for r in source})
    relabel = {old: new for new, old in enumerate(present)}
    records = [dict(r, label=relabel[r["label"]]) for r in source]
    return (records, tuple(model_classes[i] for i in present),
            pathlib.Path(config.data.eval_dir).name.replace(" ", "_"))
  _, test, class_names = quickdraw_sources.train_test_sources(config, workdir)
  return [test[i] for i in range(len(test))], tuple(class_names), "test_split"


def evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Top-1 / top-5 (with standard errors, and top-1 per class) of doodleNet restricted
  to the evaluated classes."""
  if not config.model.path:
    raise ValueError("model.kind=doodlenet needs --config.model.path=<TF.js folder>, "
                     "e.g. ../shared/pretrained/doodlenet")
  model, variables, model_classes = doodlenet.load_doodlenet(config.model.path)
  records, class_names, name = _drawings(config, workdir, model_classes)
  columns = restricted_columns(model_classes, class_names)
  logits_of = jax.jit(lambda images: model.apply(variables, images[..., None])[0][:, columns])
  labels = np.array([int(r["label"]) for r in records])
  logits = []
  start_time = time.monotonic()
  for start in range(0, len(records), CHUNK):
    chunk = records[start:start + CHUNK]
    strokes = [from_stroke3(np.asarray(r["stroke3"])).strokes for r in chunk]
    images = sr.render_official(strokes)
    padded = np.zeros((CHUNK, *images.shape[1:]), images.dtype)  # one compiled shape
    padded[:len(chunk)] = images
    logits.append(np.asarray(logits_of(jnp.asarray(padded)))[:len(chunk)])
    done = start + len(chunk)
    rate = done / (time.monotonic() - start_time)
    logging.info("doodleNet: %d/%d drawings | %.0f drawings/s | ETA %s", done, len(records),
                 rate, progress.format_duration((len(records) - done) / rate))
  logits = np.concatenate(logits)
  top1, top1_se = accuracy(top_k_hits(logits, labels, 1))
  top5, top5_se = accuracy(top_k_hits(logits, labels, 5))
  hits = top_k_hits(logits, labels, 1)
  result = {"model": "doodlenet", "model_path": str(config.model.path), "data": name,
            "sketches": len(records), "classes": len(class_names),
            "top1": top1, "top1_se": top1_se, "top5": top5, "top5_se": top5_se,
            "per_class_top1": {c: float(np.mean(hits[labels == i]))
                               for i, c in enumerate(class_names) if np.any(labels == i)}}
  logging.info("doodleNet on %d drawings of %d classes: top-1 %.4f +- %.4f, top-5 %.4f +- %.4f",
               len(records), len(class_names), top1, top1_se, top5, top5_se)
  print(json.dumps({k: v for k, v in result.items() if k != "per_class_top1"}))
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"eval_doodlenet_{name}.json").write_text(json.dumps(result, indent=1))
  return result
