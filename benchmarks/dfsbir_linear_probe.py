"""Linear probes of dfsbir students on REAL images (ours, a diagnosis; not in the paper).

Question: do a CrossX-DFL run's students carry class information about real photos and
sketches at all (above the untrained ImageNet network), and is it aligned across the
two modalities, which is what retrieval needs?

For each (run, checkpoint): the students embed the split's real TRAIN-side photos and
sketches of the run's classes (the embeddings retrieval uses; with projection heads, also
the heads' outputs), and a multinomial logistic regression is fitted per modality on
those train features (`fit_probe`: full batch, L2 penalty and step count fixed in advance,
nothing tuned on test). Reported: class accuracy on the TEST-side features of the same
modality (photo->photo, sketch->sketch), and across modalities (fit on train photos,
test on test sketches, and vice versa). Features are the unit embeddings (as retrieval
sees them), standardised by the fitting set's per-dimension mean and std (a linear map,
so the probe stays linear; the other modality is mapped with the same statistics, and,
in the `_own_stats` columns, with its own train-side statistics instead). The cross-modal
probes are also scored on the other modality's train side (`_trainside`: images the probe
never saw, ~200 a modality against ~50 on the test side). `_ncm` columns: nearest class
mean by cosine instead of the fitted probe (the fitting modality's train-side class means).
Step 0 is the fresh initialisation (the ImageNet students: the retrieval floor's
network). `--teachers` adds the photo / sketch teachers' pooled penultimate features
(each teacher on its own modality, and the photo teacher on both): the upper reference.
The train side is the teachers' own training data, so their `_trainside` columns are
in-sample (inflated); compare teachers on the test-side columns only.

  python benchmarks/dfsbir_linear_probe.py \
    --run=workdirs/dfsbir_h23_all_long_seed0_ckpts@0+24+240 --teachers --out=probe.json

`--run` is repeatable: `WORKDIR@STEP+STEP...` (0 = the untrained students; no `@`: every
checkpoint).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import dfsbir_runs  # noqa: E402

from sketchjax.methods import crossx_dfl  # noqa: E402
from sketchjax.methods import unit_vectors  # noqa: E402
from sketchjax.tasks import dfsbir_teachers  # noqa: E402
from sketchjax.tasks import sbir  # noqa: E402
from sketchjax.training import trainer  # noqa: E402

_RUNS = flags.DEFINE_multi_string("run", [], "WORKDIR[@STEP+STEP...] of a dfsbir train run")
_TEACHERS = flags.DEFINE_bool("teachers", False, "also probe the teachers' features (the "
                              "teachers of the first --run's config)")
_OUT = flags.DEFINE_string("out", "", "JSON file for the rows (printed anyway)")

# Fixed in advance (not tuned): L2 penalty on the weights, Adam steps and step size.
WEIGHT_DECAY = 1e-4
STEPS = 1000
LEARNING_RATE = 1e-2


def standardiser(x: np.ndarray):
  """The fitting set's per-dimension standardisation, as a function of features."""
  mean, std = x.mean(0), x.std(0) + 1e-6
  return lambda y: (y - mean) / std


def fit_probe(x: np.ndarray, y: np.ndarray, num_classes: int, *,
              weight_decay: float = WEIGHT_DECAY, steps: int = STEPS,
              learning_rate: float = LEARNING_RATE):
  """Multinomial logistic regression on features x [N, D] (already standardised) and int
  labels y [N]: mean cross-entropy + weight_decay / 2 * ||W||^2 (no penalty on the bias),
  full batch, `steps` Adam steps from zero. Returns predict(features [M, D]) -> int [M]."""
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
  tx = optax.adam(learning_rate)

  def loss(p):
    logits = x @ p["w"] + p["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * weight_decay * jnp.sum(p["w"] ** 2)

  @jax.jit
  def run(p):
    def body(_, carry):
      p, opt = carry
      g = jax.grad(loss)(p)
      updates, opt = tx.update(g, opt, p)
      return optax.apply_updates(p, updates), opt
    return jax.lax.fori_loop(0, steps, body, (p, tx.init(p)))[0]

  params = run(params)
  return lambda f: np.asarray(jnp.argmax(jnp.asarray(f, jnp.float32) @ params["w"] + params["b"],
                                         -1))


def probe_accuracies(train: dict, test: dict, num_classes: int) -> dict[str, float]:
  """train / test: modality -> (features [N, D], labels [N]). Accuracy of each modality's
  probe on its own test side and on the other modality's test side."""
  out = {}
  for fit in ("photo", "sketch"):
    x, y = train[fit]
    scale = standardiser(x)
    predict = fit_probe(scale(x), y, num_classes)
    out[f"{fit}->{fit}_train"] = float(np.mean(predict(scale(x)) == y))
    for target in ("photo", "sketch"):
      tx_, ty = test[target]
      out[f"{fit}->{target}"] = float(np.mean(predict(scale(tx_)) == ty))
    # Across modalities with the target modality standardised by its own TRAIN-side
    # statistics: whether class structure is there but offset / scaled per modality.
    target = "sketch" if fit == "photo" else "photo"
    own = standardiser(train[target][0])
    tx_, ty = test[target]
    out[f"{fit}->{target}_own_stats"] = float(np.mean(predict(own(tx_)) == ty))
    # Across modalities on the other modality's TRAIN side (never seen by this probe;
    # ~4x the test side's items, so a smaller binomial error), both standardisations.
    ox, oy = train[target]
    out[f"{fit}->{target}_trainside"] = float(np.mean(predict(scale(ox)) == oy))
    out[f"{fit}->{target}_trainside_own_stats"] = float(np.mean(predict(own(ox)) == oy))
    # Nearest class mean by cosine (nothing fitted but the means; closest to retrieval):
    # the fitting modality's train-side class means, each image of the other modality
    # (test side and train side) and of its own test side given its closest mean's class.
    ncm = nearest_class_mean(x, y, num_classes)
    for side, (fx, fy) in test.items():
      out[f"{fit}->{side}_ncm"] = float(np.mean(ncm(fx) == fy))
    out[f"{fit}->{target}_trainside_ncm"] = float(np.mean(ncm(ox) == oy))
  return out


def nearest_class_mean(x: np.ndarray, y: np.ndarray, num_classes: int):
  """predict(features) -> the class of the unit class mean (of x's unit rows) with the
  highest cosine."""
  rows = unit_vectors.unit(x)
  means = unit_vectors.unit(jnp.stack([rows[y == c].mean(0) for c in range(num_classes)]))
  return lambda f: np.asarray(jnp.argmax(unit_vectors.unit(f) @ means.T, -1))


def _labels(items, classes) -> np.ndarray:
  index = {c: i for i, c in enumerate(classes)}
  return np.array([index[i.label] for i in items], np.int32)


def _parse(spec: str) -> tuple[pathlib.Path, list[int] | None]:
  path, _, steps = spec.partition("@")
  return pathlib.Path(path), [int(s) for s in steps.split("+")] if steps else None


def _states(run: dfsbir_runs.Run, steps: list[int] | None):
  """(step, params, state) of the wanted steps (0 = the fresh initialisation)."""
  if steps is None:
    yield from dfsbir_runs.checkpoint_states(run)
    return
  for step in steps:
    if step == 0:
      yield (0, *run.objective.init(jax.random.key(run.config.seed), run.batch))
    else:
      yield (step, *trainer.restore_params(str(run.workdir), run.objective, run.batch,
                                           run.config, run.mesh, step=step))


def main(argv):
  del argv
  rows = []

  def report(name, step, embedding, feats, labels, num_classes):
    """feats / labels: (side, modality) -> features [N, D] / int labels [N]."""
    t0 = time.time()
    train, test = ({m: (feats[(side, m)], labels[(side, m)]) for m in ("photo", "sketch")}
                   for side in ("train", "test"))
    row = {"run": name, "step": step, "embedding": embedding,
           "dim": int(feats[("test", "photo")].shape[1]),
           **probe_accuracies(train, test, num_classes)}
    row["fit_seconds"] = round(time.time() - t0, 1)
    rows.append(row)
    print(json.dumps(row), flush=True)

  first = None
  for spec in _RUNS.value:
    workdir, steps = _parse(spec)
    run = dfsbir_runs.load_run(workdir)
    split = sbir.load_split(run.config)
    classes = sorted(set(split.test.classes))
    sides = {"train": split.train, "test": split.test}
    items = {(s, m): [i for i in (side.photos if m == "photo" else side.sketches)
                      if i.label in classes]
             for s, side in sides.items() for m in ("photo", "sketch")}
    labels = {k: _labels(v, classes) for k, v in items.items()}
    if first is None:
      first = (run, items, labels, classes)
      print(json.dumps({"classes": classes, **{f"{s}_{m}": len(v) for (s, m), v in items.items()}}),
            flush=True)
    for step, params, state in _states(run, steps):
      variables = {"params": params["students"], **state["students"]}
      feats = {k: sbir.embed_items(run.students, variables, v, k[1], run.config, run.mesh)
               for k, v in items.items()}
      spaces = {"students": feats}
      if run.config.students.projection_dim:
        spaces["heads"] = {k: np.asarray(crossx_dfl.apply_head(params["heads"][k[1]],
                                                                jnp.asarray(x)))
                           for k, x in feats.items()}
      for name, f in spaces.items():
        report(str(workdir), step, name, f, labels, len(classes))

  if _TEACHERS.value and first is not None:
    run, items, labels, classes = first
    embedders = {}
    for m in ("photo", "sketch"):
      model, variables, trained = dfsbir_teachers.load_teacher(getattr(run.config.teachers, m))
      embedders[m] = (dfsbir_teachers.feature_embedding(model, trained.data.image_size), variables)
    for name, which in (("teachers (own modality)", {"photo": "photo", "sketch": "sketch"}),
                        ("photo teacher (both)", {"photo": "photo", "sketch": "photo"})):
      f = {k: sbir.embed_images(*embedders[which[k[1]]], v, run.config, run.mesh)
           for k, v in items.items()}
      report(name, -1, "teacher features", f, labels, len(classes))

  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  app.run(main)
