"""Why CrossX-DFL's estimators collapse (issue 11): training signals only, no test image.

For each run directory and each of its checkpoints (and a fresh initialisation,
step 0), on `--samples` noise vectors fed to both estimators in training mode
(batch statistics, as in the estimator step):
  pixel_std        mean over pixels of the std across the noise (0: one image for all noise);
  saturated        fraction of pixels with |x| > 0.99 (tanh saturated);
  distinct         classes among the teacher's argmax labels, and the top class's share;
  soft_entropy     -L_ie / log10 C: entropy of the batch-mean softmax (what L_ie sees),
                   1 = uniform;
  hard_entropy     the same of the argmax histogram (what retrieval needs), 1 = uniform;
  max_prob         mean top probability;
  agreement        photo and sketch teacher give the pair the same class;
  target_hit       class-conditional runs (`dfl.class_conditional`, ours): the
                   teacher's argmax is the class the noise was given (the
                   classes arange % C over the samples);
and, on a batch of the run's size, the norm of each estimator-loss term's
gradient (weighted as in the run) over the estimators' parameters.

  python benchmarks/dfsbir_collapse.py --workdirs=workdirs/dfsbir_crossx,workdirs/dfsbir_diag_elr1e-5
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import optax

from sketchjax.methods import crossx_dfl
from sketchjax.tasks import dfsbir

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dfsbir_runs  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdirs", [], "dfsbir train-mode run directories")
_SAMPLES = flags.DEFINE_integer("samples", 64, "noise vectors for the image statistics")
_OUT = flags.DEFINE_string("out", "", "optional JSON file for the rows")


def _entropy(p: jax.Array) -> jax.Array:
  """Entropy of a distribution [C] over log C (1 = uniform)."""
  return -jnp.sum(p * jnp.log(jnp.maximum(p, 1e-30))) / jnp.log(p.shape[-1])


def image_statistics(photos, sketches, photo_logits, sketch_logits, targets=None,
                     sketch_targets=None) -> dict[str, float]:
  out = {}
  for name, images, logits in (("photo", photos, photo_logits), ("sketch", sketches,
                                                                   sketch_logits)):
    probs = jax.nn.softmax(logits, -1)
    labels = jnp.argmax(logits, -1)
    histogram = jnp.mean(jax.nn.one_hot(labels, logits.shape[-1]), 0)
    out.update({
        f"{name}_pixel_std": jnp.mean(jnp.std(images, axis=0)),
        f"{name}_saturated": jnp.mean(jnp.abs(images) > 0.99),
        f"{name}_distinct": jnp.sum(histogram > 0),
        f"{name}_top_share": jnp.max(histogram),
        f"{name}_soft_entropy": _entropy(jnp.mean(probs, 0)),
        f"{name}_hard_entropy": _entropy(histogram),
        f"{name}_max_prob": jnp.mean(jnp.max(probs, -1)),
    })
  out["agreement"] = jnp.mean(jnp.argmax(photo_logits, -1) == jnp.argmax(sketch_logits, -1))
  if targets is not None:
    out["photo_target_hit"] = jnp.mean(jnp.argmax(photo_logits, -1) == targets)
    out["sketch_target_hit"] = jnp.mean(jnp.argmax(sketch_logits, -1) == sketch_targets)
  return {k: float(v) for k, v in out.items()}


def diagnose(workdir: pathlib.Path) -> list[dict]:
  run = dfsbir_runs.load_run(workdir)
  config, teachers, constants, estimator = run.config, run.teachers, run.constants, run.estimator
  num_classes, conditional = estimator.num_classes, bool(estimator.num_classes)
  generate = dfsbir.generate_fn(estimator)
  student_fns = dfsbir.students_of(run.students, config)
  dfl = config.dfl
  weights = crossx_dfl.Weights(one_hot=dfl.one_hot, info_entropy=dfl.info_entropy,
                               activation=dfl.activation, modality=dfl.modality,
                               alignment=dfl.alignment, adversarial=dfl.adversarial)
  noise = jax.random.normal(jax.random.key(123), (_SAMPLES.value, config.estimator.latent_dim))
  targets = jnp.arange(_SAMPLES.value) % num_classes if conditional else None
  labels = (targets,) if conditional else ()

  @jax.jit
  def statistics(params, state, constants):
    (photos, sketches), _ = generate(params["estimators"], state["estimators"], noise, *labels)
    photo_logits = teachers.photo(constants, photos)[0]
    sketch_logits = teachers.sketch(constants, sketches)[0]
    if not conditional:
      return photos, sketches, photo_logits, sketch_logits
    return (photos, sketches, photo_logits, sketch_logits, targets,
            crossx_dfl.sketch_targets(teachers, targets, num_classes, sketch_logits))

  @jax.jit
  def term_gradients(params, state, constants):
    student_variables = {"params": params["students"], **state["students"]}
    norms = {}
    for name in dataclasses.asdict(weights):
      weight = getattr(weights, name)
      if not weight:
        continue
      only = crossx_dfl.Weights(**{k: (weight if k == name else 0.0)
                                   for k in dataclasses.asdict(weights)})
      grads, (terms, _, _) = jax.grad(crossx_dfl.estimator_loss, has_aux=True)(
          params["estimators"], state["estimators"], generate=generate,
          noise=noise[:dfl.batch_size], teachers=teachers, students=student_fns,
          student_variables=student_variables, constants=constants, weights=only,
          targets=targets[:dfl.batch_size] if conditional else None)
      if name in terms:
        norms[f"grad_{name}"] = optax.tree.norm(grads)
        norms[f"L_{name}"] = terms[name]
    return norms

  rows = []
  for step, params, state in dfsbir_runs.checkpoint_states(run):
    row = {"workdir": str(workdir), "step": step,
           **image_statistics(*statistics(params, state, constants)),
           **{k: float(v) for k, v in term_gradients(params, state, constants).items()}}
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
          flush=True)
    rows.append(row)
  return rows


def main(argv):
  del argv
  rows = [row for workdir in _WORKDIRS.value for row in diagnose(pathlib.Path(workdir))]
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  app.run(main)
