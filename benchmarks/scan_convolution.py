"""A convolution and its gradients inside `lax.scan`, rolled and unrolled, against the same
program outside a loop (the trade-off of `training/microbatch.py`'s `unroll`).

  python benchmarks/scan_convolution.py

A 3x3 stride-2 convolution, 32 -> 64 channels, on 12 images of 112 x 112 (NHWC, float32), as
in ZSE-SBIR's conv stem. Rows: the forward, the weight gradient and the input gradient; each
jitted alone once (median of --repeats calls, process CPU seconds, so that the figure holds on
a shared machine), then `--steps` of it in one `lax.scan` (rolled: an XLA while loop;
unrolled: straight-line code), the ratio = scan / (steps x alone). On XLA CPU the rolled
weight gradient runs in a generic slow path (measured 32-44x, CPU-2), the unrolled one at ~1x.
"""

from __future__ import annotations

import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from jax import lax

_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls of each program (median).")
_STEPS = flags.DEFINE_integer("steps", 2, "Iterations of the scan.")


def _cpu_seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(_REPEATS.value):
    start = time.process_time()
    jax.block_until_ready(fn(*args))
    times.append(time.process_time() - start)
  return statistics.median(times)


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def main(argv):
  del argv
  steps = _STEPS.value
  images = jax.random.normal(jax.random.key(0), (steps, 12, 112, 112, 32))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 32, 64)) / 17.0
  forward = lambda w, x: jnp.sum(jnp.tanh(_conv(x, w)))  # noqa: E731
  programs = {"forward": forward, "weight gradient": jax.grad(forward),
              "input gradient": jax.grad(forward, argnums=1)}
  print(f"{jax.devices()[0].platform}: conv 3x3/2 32->64 on [12, 112, 112, 32], "
        f"process CPU seconds, medians of {_REPEATS.value}, scans of {steps}")
  for name, program in programs.items():
    alone = _cpu_seconds(jax.jit(program), kernel, images[0])
    row = f"  {name:16s} alone {alone:8.4f} s"
    for unroll in (1, True):
      def scanned(w, xs, program=program, unroll=unroll):
        body = lambda total, x: (total + jnp.sum(program(w, x)), None)  # noqa: E731
        return lax.scan(body, jnp.float32(0), xs, unroll=unroll)[0]
      seconds = _cpu_seconds(jax.jit(scanned), kernel, images)
      label = "unrolled" if unroll is True else "rolled"
      row += f"   {label} {seconds:8.4f} s ({seconds / (steps * alone):5.2f}x)"
    print(row, flush=True)


if __name__ == "__main__":
  app.run(main)
