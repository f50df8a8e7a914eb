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
