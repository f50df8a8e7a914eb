"""benchmarks/official_torch.py, the official CrossX-DFL steps in PyTorch that
dfsbir_steps.py times beside ours: its networks and losses against sketchjax's (the
same parameter counts, the same loss values from the same inputs), so the two time
the same computation. Skips where torch / torchvision are not installed (an optional
benchmark dependency, not sketchjax's)."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="torch not installed (pip install -e '.[official]'): the official PyTorch "
    "baseline is an optional benchmark dependency")
pytest.importorskip("torchvision", reason="torchvision not installed")

from sketchjax.methods import crossx_dfl  # noqa: E402
from sketchjax.methods import dfsbir_losses  # noqa: E402
from sketchjax.models import dcgan  # noqa: E402
from sketchjax.models import torchvision_resnet  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import official_torch  # noqa: E402  pylint: disable=g-import-not-at-top


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _torch_count(module) -> int:
  return sum(p.numel() for p in module.parameters())


def test_generator_and_resnet_have_our_parameter_counts():
  variables = jax.eval_shape(lambda: dcgan.Estimator().init(jax.random.key(0),
                                                            jnp.zeros((1, 1000))))
  assert _torch_count(official_torch.generator()) == _count(variables["params"])
  assert _torch_count(official_torch.generator()) == pytest.approx(62.4e6, rel=1e-3)
  for outputs in (None, 10, 1):
    ours = jax.eval_shape(lambda o=outputs: torchvision_resnet.resnet34(o).init(
        jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert _torch_count(official_torch.resnet34(outputs)) == _count(ours["params"])


def test_generator_output_is_64px_in_tanh_range():
  images = official_torch.generator(width=8)(torch.randn(2, 1000, 1, 1))
  assert tuple(images.shape) == (2, 3, 64, 64)
  assert float(images.detach().abs().max()) <= 1.0


def test_proxy_anchor_equals_ours():
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(12, 16)).astype(np.float32)
  proxies = rng.normal(size=(5, 16)).astype(np.float32)
  labels = np.array([0, 0, 1, 1, 1, 3, 3, 0, 1, 3, 3, 0])  # classes 2 and 4 absent
  theirs = official_torch.proxy_anchor(torch.from_numpy(embeddings), torch.from_numpy(labels),
                                       torch.from_numpy(proxies))
  ours = dfsbir_losses.proxy_anchor_loss(embeddings, labels, proxies)
  np.testing.assert_allclose(float(theirs), float(ours), rtol=1e-5)


def test_info_nce_with_fixed_queues_equals_ours():
  rng = np.random.default_rng(1)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  photo, sketch = (unit(rng.normal(size=(6, 8))).astype(np.float32) for _ in range(2))
  sketch_keys, photo_keys = (unit(rng.normal(size=(10, 8))).astype(np.float32) for _ in range(2))
  t = torch.from_numpy
  theirs = (official_torch.info_nce(t(photo), t(sketch), t(sketch_keys.T.copy()))
            + official_torch.info_nce(t(sketch), t(photo), t(photo_keys.T.copy())))
  queues = dfsbir_losses.Queues(jnp.asarray(sketch_keys), jnp.asarray(photo_keys),
                                jnp.zeros((), jnp.int32))
  ours = dfsbir_losses.queue_info_nce(photo, sketch, queues, 0.07)
  np.testing.assert_allclose(float(theirs), float(ours), rtol=1e-5)


def test_official_normalisation_equals_ours():
  images = np.random.default_rng(2).uniform(-1, 1, size=(4, 6, 6, 3)).astype(np.float32)
  theirs = official_torch.official_normalisation(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  ours = crossx_dfl.official_normalization(jnp.asarray(images), lambda y: y)
  np.testing.assert_allclose(theirs.numpy().transpose(0, 2, 3, 1), np.asarray(ours),
                             rtol=1e-5, atol=1e-5)


def test_steps_run_and_update_only_their_networks():
  run = official_torch.Official(batch=2, classes=3)
  run.generators = [official_torch.generator(width=8).train() for _ in range(2)]
  run.g_opt = torch.optim.SGD([p for g in run.generators for p in g.parameters()], lr=1.0)
  teacher_before = [p.clone() for p in run.teachers[0].parameters()]
  generator_before = [p.clone() for p in run.generators[0].parameters()]
  loss = run.estimator_step(torch.randn(2, 1000), adversarial=True)
  assert torch.isfinite(loss)
  assert any(not torch.equal(a, b) for a, b in zip(generator_before,
                                                   run.generators[0].parameters()))
  assert all(torch.equal(a, b) for a, b in zip(teacher_before, run.teachers[0].parameters()))
  photos = torch.rand(2, 3, 64, 64) * 2 - 1
  for metric in ("info_nce", "proxy_anchor"):
    assert torch.isfinite(run.student_step(photos, photos.flip(0), metric))
