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
import pathlib

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sketchjax.methods import crossx_dfl
from sketchjax.tasks import dfsbir
from sketchjax.tasks import dfsbir_config
from sketchjax.tasks import dfsbir_teachers
from sketchjax.tasks import sbir
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer

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


def _merged(base: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
  """The run's saved config over today's defaults (runs saved before a key existed)."""
  for key, value in saved.items():
    if isinstance(value, dict) and key in base and isinstance(base[key],
                                                              ml_collections.ConfigDict):
      _merged(base[key], value)
    else:
      base[key] = value
  return base


def diagnose(workdir: pathlib.Path) -> list[dict]:
  config = _merged(dfsbir_config.base_config(),
                   json.loads((workdir / "config.json").read_text()))
  split = sbir.load_split(config)
  teachers, constants = dfsbir_teachers.load_teachers(config, split.train.classes)
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  students = dfsbir.build_students(config)
  objective = dfsbir.dfl_objective(config, teachers, constants, students, mesh)
  batch = next(dfsbir.NoiseBatches(config.dfl.batch_size))
  estimator = dfsbir._estimator(config, teachers, constants)
  num_classes, conditional = estimator.num_classes, bool(estimator.num_classes)
  generate = dfsbir.generate_fn(estimator)
  student_fns = dfsbir.students_of(students, config)
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

  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  rows = []
  for step in [0, *steps]:
    if step == 0:
      params, state = objective.init(jax.random.key(config.seed), batch)
    else:
      params, state = trainer.restore_params(str(workdir), objective, batch, config, mesh,
                                             step=step)
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
