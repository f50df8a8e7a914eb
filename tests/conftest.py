"""Test set-up: 8 simulated CPU devices and JAX's persistent compilation cache (set here
before any test imports jax)."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_PRETRAINED = SHARED / "pretrained"

# JAX's persistent compilation cache, outside the checkout so that it outlives a clean
# checkout on the same machine (CI's); SKETCHJAX_TEST_CACHE overrides. Set in the
# environment before jax is imported, so the CLI runs the tests start inherit it.
_USER_CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
os.environ.update(
    JAX_COMPILATION_CACHE_DIR=os.environ.get("SKETCHJAX_TEST_CACHE",
                                             str(_USER_CACHE / "sketchjax" / "jax_tests")),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest  # noqa: E402  (jax, imported by the tests, reads the settings above)

# The files that take minutes (subprocess trainings, multi-process runs), longest first.
# With `--dist loadfile` a file runs whole on one worker; xdist's default queue is by
# number of tests, which put these few-test files last and left one worker running them
# alone at the end. Longest first, the two workers end together.
LONGEST_FIRST = ("test_resume.py", "test_zse_training.py", "test_dfsbir.py",
                 "test_sbir_e2e.py", "test_multiprocess.py", "test_attribution_task.py",
                 "test_classify_e2e.py", "test_soft_rasterize.py", "test_attribution.py",
                 "test_retrieval_attribution.py", "test_mobilenet_v2.py",
                 "test_vector_attack.py", "test_quickdraw_folders.py", "test_bad_input_cli.py")


def pytest_configure(config):
  if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order below
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within files


def need(path: pathlib.Path) -> pathlib.Path:
  """`path`, or skip the test with the reason where it is absent."""
  if not path.exists():
    pytest.skip(f"real data not found at {path}: these tests need the project's "
                "../shared folder next to the checkout")
  return path


@pytest.fixture
def quickdraw_dir() -> pathlib.Path:
  """../shared/data/quickdraw (skips the test where it is absent)."""
  return need(SHARED_DATA / "quickdraw")


@pytest.fixture
def sketchy_dir() -> pathlib.Path:
  """../shared/data/sketchy (skips the test where it is absent)."""
  return need(SHARED_DATA / "sketchy")


@pytest.fixture
def pacs_dir() -> pathlib.Path:
  """../shared/data/tuberlin_pacs (skips the test where it is absent)."""
  return need(SHARED_DATA / "tuberlin_pacs")


@pytest.fixture
def pretrained_dir() -> pathlib.Path:
  """../shared/pretrained (skips the test where it is absent)."""
  return need(SHARED_PRETRAINED)
