"""Which CPU a benchmark runs on, and the official numbers measured on that kind of CPU.

The project's machines are not all the same CPU, and the official PyTorch code
was timed on each kind separately (2 threads, medians), so a benchmark compares
with the set whose key is a substring of this machine's CPU model name (as
`lscpu` / /proc/cpuinfo print it), and says when it has none.
"""

from __future__ import annotations

import platform
import re
from typing import Mapping, TypeVar

T = TypeVar("T")


def cpu_model() -> str:
  """The CPU model name ('model name' of /proc/cpuinfo, e.g. 'AMD EPYC'), or 'unknown CPU'."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def _normalise(name: str) -> str:
  """Lower case, no trademarks or repeated spaces: 'Intel(R) Xeon(R) CPU' -> 'intel xeon cpu'."""
  return " ".join(re.sub(r"\((r|tm)\)", " ", name.lower()).split())


def reference_set(sets: Mapping[str, T], model: str) -> tuple[str | None, T | None]:
  """(key, numbers) of the first set whose key occurs in the CPU model name, else (None, None)."""
  for key, numbers in sets.items():
    if _normalise(key) in _normalise(model):
      return key, numbers
  return None, None


def describe(sets: Mapping[str, object], model: str) -> str:
  """One line saying which official set is used for this CPU, or that there is none."""
  key, _ = reference_set(sets, model)
  if key is None:
    return (f"CPU: {model}; no official numbers for this kind of CPU (have: "
            f"{', '.join(sets)}): the official columns are left empty")
  return f"CPU: {model}; official numbers: the {key} set (measured on that kind of CPU)"
