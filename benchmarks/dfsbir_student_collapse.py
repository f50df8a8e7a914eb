"""Is it the students or their inputs? CrossX-DFL's student collapse (issue 11),
training signals only, no test image.

For each run directory: the estimators of every checkpoint (and the fresh
initialisation, step 0) generate `--samples` pairs (classes arange % C with
class-conditional estimators), and the students of every checkpoint (and their
initial weights) embed each of those batches. Each row is one (images of step
i, students of step s) with `crossx_dfl.collapse_signals`: mean cosines
between different embeddings, photo x photo, sketch x sketch, photo x sketch
(each also same / other class by the teachers' labels), and `pair_cosine`. A
column of the initial students that stays low while the diagonal rises says
the students collapse, not the images.

  python benchmarks/dfsbir_student_collapse.py --workdirs=workdirs/dfsbir_h21_none_seed0
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from sketchjax.methods import crossx_dfl
from sketchjax.tasks import dfsbir

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dfsbir_runs  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdirs", [], "dfsbir train-mode run directories")
_SAMPLES = flags.DEFINE_integer("samples", 64, "generated pairs a batch")
_OUT = flags.DEFINE_string("out", "", "optional JSON file for the rows")


def diagnose(workdir: pathlib.Path) -> list[dict]:
  run = dfsbir_runs.load_run(workdir)
  config, teachers, constants, estimator = run.config, run.teachers, run.constants, run.estimator
  generate = dfsbir.generate_fn(estimator)
  encode = dfsbir.students_of(run.students, config)
  noise = jax.random.normal(jax.random.key(123), (_SAMPLES.value, config.estimator.latent_dim))
  labels = ((jnp.arange(_SAMPLES.value) % estimator.num_classes,) if estimator.num_classes
            else ())

  @jax.jit
  def images(params, state, constants):
    (photos, sketches), _ = generate(params["estimators"], state["estimators"], noise, *labels)
    photo_logits = teachers.photo(constants, photos)[0]
    return (photos, sketches, jnp.argmax(photo_logits, -1),
            jnp.argmax(teachers.sketch(constants, sketches)[0], -1),
            teachers.sketch_of_photo(photo_logits.shape[-1]))

  @jax.jit
  def signals(params, state, photos, sketches, photo_labels, sketch_labels, sketch_of_photo):
    variables = {"params": params["students"], **state["students"]}
    prepare = lambda x: encode.input_transform(crossx_dfl.resize(x, encode.image_size))
    (photo, _), _ = encode.encode(variables, "photo", prepare(photos), train=False)
    (sketch, _), _ = encode.encode(variables, "sketch", prepare(sketches), train=False)
    return {"pair_cosine": jnp.mean(jnp.sum(photo * sketch, -1)),
            **crossx_dfl.collapse_signals(photo, sketch, photo_labels, sketch_labels,
                                          sketch_of_photo)}

  states = {step: (params, state) for step, params, state in dfsbir_runs.checkpoint_states(run)}
  rows = []
  for image_step, (params, state) in states.items():
    pairs = images(params, state, constants)
    for student_step, (student_params, student_state) in states.items():
      row = {"workdir": workdir.name, "images": image_step, "students": student_step,
             **{k: float(v) for k, v in signals(student_params, student_state, *pairs).items()}}
      print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
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
