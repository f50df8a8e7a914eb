"""Which library computes convolutions on XLA's CPU backend.

jax 0.10's XLA CPU hands each convolution to YNNPACK ("__ynn_fusion"). XLA's own
convolution (Eigen's spatial convolution) computes the 3x3 convolutions of ResNet-34's
first stage (64 channels, 16x16 maps, batch 64) 1.7x faster forward and 3.3x faster
backward on our 2-core Xeon and the other stages as fast: CrossX-DFL's official-size
student step 1.64 -> 1.33 s, its CPU variant's period 17.3 -> 14.6 s, the MobileNetV2
training step (1x1 convolutions but for its stem) 0.49 -> 0.38 s at 64 px (WORKSPACE, "The
student step at the official sizes, session 25"). Dots, elementwise ops and reductions stay
in YNNPACK either way.

`use_convolutions("winograd")` is "eigen" plus the 3x3 stride-1 convolutions of small maps
with >= 128 channels as Winograd F(2x2, 3x3) products (`models/winograd.py`): CrossX-DFL's
official-size student step 1.27 -> 1.20 s in one process (0-5% between benchmark runs), its
programs slower to compile and the estimator benchmark's peak memory 8.6 -> 14.7 GiB, so it
is a choice, not the default.

`use_convolutions("eigen")` adds `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`
to XLA_FLAGS; "ynnpack" leaves XLA's default. XLA reads XLA_FLAGS when it compiles, so this
applies to every program jitted after the call (sketchjax.main calls it first thing). An
XLA_FLAGS that already sets the option is left as it is: the user's choice wins. Only CPU
compilations read the option.
"""

from __future__ import annotations

import os

CONVOLUTIONS = ("winograd", "eigen", "ynnpack")
_OPTION = "--xla_cpu_experimental_ynn_fusion_type"
_EIGEN = f"{_OPTION}=-individual_convolution"


def use_convolutions(library: str) -> str:
  """Sets XLA_FLAGS for `library` (one of CONVOLUTIONS); returns the XLA_FLAGS now in force."""
  if library not in CONVOLUTIONS:
    raise ValueError(f"unknown CPU convolution library {library!r}; expected one of "
                     f"{CONVOLUTIONS}")
  from sketchjax.models import winograd  # pylint: disable=g-import-not-at-top
  winograd.enable(library == "winograd")
  flags = os.environ.get("XLA_FLAGS", "")
  if library != "ynnpack" and _OPTION not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {_EIGEN}".strip()
  return os.environ.get("XLA_FLAGS", "")
