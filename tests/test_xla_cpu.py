"""The CPU convolution library switch: XLA_FLAGS it sets, and what XLA compiles with it."""

import os
import subprocess
import sys

import pytest

from sketchjax import xla_cpu
from sketchjax.models import winograd

EIGEN = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
# Compiles a convolution's gradient; prints "xla" when its entry computation runs
# convolutions itself, "ynn" when it hands them to YNNPACK fusions.
PROBE = """
import jax, jax.numpy as jnp
from jax import lax
conv = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
x, k = jnp.ones((8, 16, 16, 64)), jnp.ones((3, 3, 64, 64))  # YNNPACK takes these
grad = jax.jit(jax.grad(lambda x, k: conv(x, k).sum(), argnums=(0, 1)))
entry = grad.lower(x, k).compile().as_text().split("ENTRY")[1]
print("xla" if " convolution(" in entry else "ynn" if "__ynn_fusion" in entry else "neither")
"""


def test_eigen_adds_the_option_and_keeps_other_flags(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  assert xla_cpu.use_convolutions("eigen") == f"--xla_force_host_platform_device_count=8 {EIGEN}"
  assert xla_cpu.use_convolutions("eigen") == os.environ["XLA_FLAGS"]  # added once


def test_winograd_is_eigen_plus_the_winograd_products(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  try:
    assert xla_cpu.use_convolutions("winograd") == EIGEN
    assert winograd.enabled()
    assert xla_cpu.use_convolutions("eigen") == EIGEN
    assert not winograd.enabled()
  finally:
    winograd.enable(False)


def test_the_users_option_and_ynnpack_leave_xla_flags_alone(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  assert xla_cpu.use_convolutions("eigen") == "--xla_cpu_experimental_ynn_fusion_type="
  monkeypatch.delenv("XLA_FLAGS")
  assert xla_cpu.use_convolutions("ynnpack") == ""
  assert "XLA_FLAGS" not in os.environ
  with pytest.raises(ValueError, match="expected one of"):
    xla_cpu.use_convolutions("mkl")


@pytest.mark.parametrize("library, compiled_by", [("eigen", "xla"), ("ynnpack", "ynn")])
def test_xla_compiles_convolutions_with_the_chosen_library(monkeypatch, library, compiled_by):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  xla_cpu.use_convolutions(library)
  result = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          capture_output=True, text=True, timeout=300, check=True)
  assert result.stdout.split()[-1] == compiled_by
