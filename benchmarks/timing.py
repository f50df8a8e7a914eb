"""The timing loop the step benchmarks share."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax


def median_seconds(fn: Callable[..., Any], args_of_call: Callable[[int], tuple],
                   repeats: int) -> float:
  """Median wall seconds of `fn(*args_of_call(i))` over calls i = 1..repeats, after
  call 0 (compilation and warm-up); each call waits for its results."""
  jax.block_until_ready(fn(*args_of_call(0)))
  times = []
  for i in range(1, repeats + 1):
    args = args_of_call(i)
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def compiled_flops(compiled: Any) -> float:
  """FLOPs of one call of a compiled program by XLA's cost analysis (nan if it has none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def compiled_buffers_gib(compiled: Any) -> float:
  """GiB XLA allocates for one call of a compiled program: its arguments, outputs and
  temporaries (memory_analysis; nan if it has none): the step's own memory, without the
  process's other arrays, compiled programs and allocator slack."""
  memory = compiled.memory_analysis()
  if memory is None:
    return float("nan")
  return (memory.argument_size_in_bytes + memory.output_size_in_bytes
          + memory.temp_size_in_bytes) / 2**30


def product_gflops(rows: int, inner: int, cols: int, repeats: int = 5) -> float:
  """GFLOP/s (wall) of one float32 product [rows, inner] @ [inner, cols] here, median of
  `repeats`: the rate XLA CPU gives a program's dominant operation, so that GFLOP a step
  over it bounds the step's speed on this machine."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (rows, inner), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (inner, cols), jnp.float32)
  seconds = median_seconds(jax.jit(jnp.matmul), lambda i: (a + i, b), repeats)
  return 2 * rows * inner * cols / seconds / 1e9
