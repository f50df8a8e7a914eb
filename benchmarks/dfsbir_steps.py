"""CrossX-DFL step times: one estimator step and one student step, beside the official code.

  python benchmarks/dfsbir_steps.py                     # official sizes, batch 64
  python benchmarks/dfsbir_steps.py --sizes=cpu         # the default config's CPU variant
  python benchmarks/dfsbir_steps.py --cpu_convolutions=ynnpack   # XLA's default library
  python benchmarks/dfsbir_steps.py --official_python=/path/to/torch-env/bin/python

Convolutions run in the library sketchjax.main uses (`--cpu_convolutions`, default
"eigen", sketchjax/xla_cpu.py); XLA_FLAGS hold for the whole process, so the other
library is another run of this script.

Official sizes (spec 2.2-2.4): two DCGAN estimators of 62.4 M parameters (latent
1000, width 224, 64x64 output), ResNet-34 photo and sketch teachers and
modality network (random init: the time does not depend on the weights),
ResNet-34 students, images given to every network at 64x64 as the code does.
Timed, each jitted and warmed up once, medians of `--repeats` (every one on
fresh noise):
  estimator step   generate both, every term of L_G (L_adv through the students
                   with their running statistics), gradients of the estimators
                   only, SGD update; with and without L_adv;
  student step     InfoNCE with the queue, and ProxyAnchor, on a generated batch.
GFLOP a step: XLA's cost analysis of the compiled step; beside it the rate it ran at and
the rate the issue's goal (1.5x faster than the official step) would need, against one
float32 product timed in the same process (`--product`, rows x inner x cols; default the
im2col product of a 3x3 convolution of ResNet-34's layer3 at batch 64 and 64 px: 64 images
x 4 x 4 positions, 3 x 3 x 256 -> 256, where most of the students' FLOPs are): the rate
XLA CPU gives that product here bounds what a step of these convolutions reaches on this
machine.
Memory: each step's XLA buffers (arguments, outputs, temporaries), and the process's
maximum resident set (ru_maxrss), all of it: every step's compiled program and arrays.
The official PyTorch code on this kind of machine with 2 threads (torch 2.13,
medians, from the issue): estimator 15.3 s with L_adv / 13.8 s without (12.8 /
12.2 s with its frozen networks kept out of the backward pass), student 1.67 s
(InfoNCE) / 1.63 s (ProxyAnchor), 4.8 GiB peak. The printed ratio is
official / ours (above 1: we are faster).
`--official_python`: an interpreter with torch and torchvision; the official steps
(`official_torch.py`) then also run in this time window, once before and once after ours
(each a process of its own, while this one waits), and each row adds their mean median and
the ratio to it: this VM's speed moves within an hour (its fp32 product rate 145-290
GFLOP/s in one morning), so that ratio, not the one to the issue's fixed figures, is the
comparison at one speed.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sketchjax import xla_cpu
from sketchjax.methods import crossx_dfl
from sketchjax.methods import dfsbir_losses
from sketchjax.tasks import dfsbir
from sketchjax.tasks import dfsbir_config
from sketchjax.tasks import dfsbir_teachers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402

_SIZES = flags.DEFINE_enum("sizes", "official", ["official", "cpu"], "Network sizes.")
_BATCH = flags.DEFINE_integer("batch", 64, "Pairs a step.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls of each step (median).")
_CLASSES = flags.DEFINE_integer("classes", 10, "Teacher classes.")
_PRODUCT = flags.DEFINE_list("product", ["1024", "2304", "256"],
                             "rows,inner,cols of the float32 product whose rate is printed.")
_CONVOLUTIONS = flags.DEFINE_enum("cpu_convolutions", "eigen", xla_cpu.CONVOLUTIONS,
                                  "Library of XLA CPU's convolutions (sketchjax/xla_cpu.py).")
_STEPS = flags.DEFINE_multi_enum("steps", ["estimator", "student"], ["estimator", "student"],
                                 "Which steps to time (the student steps alone: a shorter run).")
_OFFICIAL_PYTHON = flags.DEFINE_string(
    "official_python", "", "Python with torch + torchvision: also time the official steps "
    "(official_torch.py) before and after ours; empty: the issue's figures only.")
GOAL = 1.5  # the issue: each step at least 1.5x faster than the official code

OFFICIAL_S = {"estimator step (L_adv)": 15.3, "estimator step (no L_adv)": 13.8,
              "student step (InfoNCE)": 1.67, "student step (ProxyAnchor)": 1.63}
OFFICIAL_PEAK_GIB = 4.8


def _config() -> ml_collections.ConfigDict:
  config = dfsbir_config.base_config()
  if _SIZES.value == "official":
    dfsbir_config.official(config)
    config.data.image_size = 64  # the code feeds its 64x64 estimator images as they are
  config.students.pretrained = config.teacher.pretrained = ""  # random init: same time
  config.dfl.batch_size = _BATCH.value
  return config


def _teachers(config):
  """Random teachers and modality network of the config's backbone."""
  size = config.data.image_size
  constants, frozen = {}, {}
  images = jnp.zeros((1, size, size, 3))
  for i, (name, classes) in enumerate((("photo", _CLASSES.value), ("sketch", _CLASSES.value),
                                       ("modality", 1))):
    model = dfsbir_teachers.build_classifier(config.teacher, classes)
    constants[name] = model.init(jax.random.key(i), images)
    frozen[name] = dfsbir_teachers._frozen(model, name, size)
  return crossx_dfl.Teachers(frozen["photo"], frozen["sketch"], frozen["modality"],
                             dfsbir_teachers._proxies("photo"),
                             dfsbir_teachers._proxies("sketch")), constants


def _official_run() -> dict:
  """One run of official_torch.py at this benchmark's batch, classes, repeats and steps."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "official_torch.py")
  out = subprocess.run([_OFFICIAL_PYTHON.value, script, f"--batch={_BATCH.value}",
                        f"--classes={_CLASSES.value}", f"--repeats={_REPEATS.value}",
                        f"--steps={','.join(_STEPS.value)}"],
                       check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def _timed(jitted, args_of_call) -> tuple[float, float, float]:
  """(median seconds, GFLOP, GiB of XLA buffers) of one step, compiled once."""
  compiled = jitted.lower(*args_of_call(0)).compile()
  return (timing.median_seconds(compiled, args_of_call, _REPEATS.value),
          timing.compiled_flops(compiled) / 1e9, timing.compiled_buffers_gib(compiled))


def main(argv):
  del argv
  if _OFFICIAL_PYTHON.value and _SIZES.value != "official":
    raise app.UsageError("--official_python times the official sizes only (--sizes=official)")
  xla_flags = xla_cpu.use_convolutions(_CONVOLUTIONS.value)
  config = _config()
  teachers, constants = _teachers(config)
  students_model = dfsbir.build_students(config)
  students = dfsbir.students_of(students_model, config)
  estimator = dfsbir._estimator(config)
  generate = dfsbir.generate_fn(estimator)
  latent = config.estimator.latent_dim
  noise0 = jnp.zeros((1, latent))
  est = {m: estimator.init(jax.random.key(10 + i), noise0)
         for i, m in enumerate(("photo", "sketch"))}
  est_params = {m: v["params"] for m, v in est.items()}
  est_state = {m: {"batch_stats": v["batch_stats"]} for m, v in est.items()}
  size = config.data.image_size
  student_vars = students_model.init(jax.random.key(20), jnp.zeros((1, size, size, 3)),
                                     jnp.zeros((1, size, size, 3)))
  sgd = optax.sgd(1e-5, momentum=0.9)
  noise = lambda i: jax.random.normal(jax.random.key(100 + i), (_BATCH.value, latent))

  def estimator_step(weights):
    def step(params, state, opt_state, noise):
      grads, (_, state, _) = jax.grad(crossx_dfl.estimator_loss, has_aux=True)(
          params, state, generate=generate, noise=noise, teachers=teachers, students=students,
          student_variables=student_vars, constants=constants, weights=weights)
      updates, opt_state = sgd.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), state, opt_state
    return jax.jit(step)

  official_runs = [_official_run()] if _OFFICIAL_PYTHON.value else []
  results = {}
  opt_state = sgd.init(est_params)
  for name, weights in (("estimator step (L_adv)", crossx_dfl.Weights()),
                        ("estimator step (no L_adv)", crossx_dfl.Weights(adversarial=0.0))):
    if "estimator" in _STEPS.value:
      results[name] = _timed(estimator_step(weights),
                             lambda i: (est_params, est_state, opt_state, noise(i)))
  (photos, sketches), _ = jax.jit(generate)(est_params, est_state, noise(0))
  labels = jnp.arange(_BATCH.value) % _CLASSES.value
  (embedding, _), _ = jax.eval_shape(lambda v, x: students.encode(v, "photo", x, False),
                                     student_vars, photos)
  queues = dfsbir_losses.Queues.random(jax.random.key(3), 128, embedding.shape[-1])
  student_params = student_vars["params"]
  student_state = {k: v for k, v in student_vars.items() if k != "params"}
  student_opt = sgd.init(student_params)
  for name, metric in (("student step (InfoNCE)", "info_nce"),
                       ("student step (ProxyAnchor)", "proxy_anchor")):
    if "student" not in _STEPS.value:
      continue

    def step(params, state, opt, pairs, metric=metric):
      grads, (_, state, _) = jax.grad(crossx_dfl.student_loss, has_aux=True)(
          params, state, students=students, pairs=pairs, teachers=teachers, constants=constants,
          queues=queues, metric=metric, temperature=0.07)
      updates, opt = sgd.update(grads, opt, params)
      return optax.apply_updates(params, updates), state, opt
    shifted = lambda i: (student_params, student_state, student_opt,
                         (photos + 1e-3 * i, sketches, labels, labels))
    results[name] = _timed(jax.jit(step), shifted)
  if official_runs:
    official_runs.append(_official_run())
  peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  shape = [int(x) for x in _PRODUCT.value]
  product = timing.product_gflops(*shape, _REPEATS.value)
  print(f"CrossX-DFL steps, sizes={_SIZES.value}, batch {_BATCH.value}, "
        f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()}, "
        f"{jax.device_count()} device(s)), medians of {_REPEATS.value}, "
        f"convolutions: {_CONVOLUTIONS.value} (XLA_FLAGS={xla_flags!r})")
  rows = []
  for name, (seconds, gflop, buffers) in results.items():
    official = (OFFICIAL_S[name] if _SIZES.value == "official" and _BATCH.value == 64
                else None)  # the figures are of batch 64
    ratio = ("" if official is None
             else f"   official {official:6.2f} s   ratio {official / seconds:5.2f}x")
    print(f"  {name:28s} {seconds:8.3f} s{ratio}")
    row = {"step": name, "seconds": seconds, "official_s": official, "gflop": gflop,
           "buffers_gib": buffers}
    if official_runs:
      row["official_now_s"] = runs = [run["seconds"][name] for run in official_runs]
      now = sum(runs) / len(runs)
      print(f"  {'':28s} official now {now:6.2f} s ({' / '.join(f'{r:.2f}' for r in runs)}"
            f" before / after)   ratio {now / seconds:5.2f}x")
    goal = "" if official is None else f", the {GOAL}x goal needs {gflop * GOAL / official:6.1f}"
    print(f"  {'':28s} {gflop:8.1f} GFLOP a step, ran at {gflop / seconds:6.1f} GFLOP/s{goal}")
    print(f"  {'':28s} {buffers:8.2f} GiB of XLA buffers (arguments, outputs, temporaries)")
    rows.append(row)
  print(f"  fp32 product {shape[0]} x {shape[1]} -> {shape[2]} here: {product:.1f} GFLOP/s")
  print(f"  peak resident memory {peak_gib:.2f} GiB"
        + (f" (official {OFFICIAL_PEAK_GIB} GiB)" if _SIZES.value == "official" else ""))
  for run in official_runs:
    kept_out = ", ".join(f"{s:.2f} s" for k, s in run["seconds"].items() if "kept out" in k)
    kept_out = kept_out and f"; estimator steps with its frozen networks kept out: {kept_out}"
    print(f"  official steps now: torch {run['torch']}, {run['threads']} threads, peak "
          f"{run['peak_gib']:.2f} GiB{kept_out}")
  if _SIZES.value == "cpu" and len(results) == 4:
    steps = config.dfl.estimator_steps
    period = steps * results["estimator step (L_adv)"][0] + results["student step (InfoNCE)"][0]
    print(f"  one period ({steps} estimator steps + 1 student step): {period:.1f} s")
  print(json.dumps({"sizes": _SIZES.value, "batch": _BATCH.value, "rows": rows,
                    "cpu_convolutions": _CONVOLUTIONS.value,
                    "peak_gib": peak_gib, "product_gflops": product,
                    "official_now": official_runs,
                    "product": shape}))


if __name__ == "__main__":
  app.run(main)
