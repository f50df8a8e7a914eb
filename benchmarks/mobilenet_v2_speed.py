"""MobileNetV2 with depthwise convolutions as shifted multiply-adds, against XLA's grouped convolution.

  python benchmarks/mobilenet_v2_speed.py                 # 64 and 224 px, batch 64 / 16
  python benchmarks/mobilenet_v2_speed.py --sizes=224 --batch=32

For each input side: the forward pass (the pretrained BN-folded classifier, as the
teachers, the ImageNet teacher and retrieval embeddings run it), the gradient of a class's
log-probability with respect to the images (as CrossX-DFL's estimator step takes it through
its frozen teachers and students), and one training step (BatchNorm in training mode,
gradients of every parameter, SGD; as the students and teachers train),
each jitted, medians of `--repeats`, in the same process with two implementations of the
17 depthwise 3x3 layers:
  xla      lax.conv_general_dilated with feature_group_count = channels (the model before
           `models/depthwise_conv.py`);
  shifted  `depthwise_conv.conv_general_dilated`: nine shifted slices times their taps.
The printed ratio is xla / shifted (above 1: shifted is faster); beside it the largest
difference of the outputs (of the gradients, for the step) between the two, relative to
the largest value.
"""

from __future__ import annotations

import os
import platform
import sys
import types

from absl import app
from absl import flags
import jax
from jax import lax
import jax.numpy as jnp
import optax

from sketchjax.models import depthwise_conv
from sketchjax.models import mobilenet_v2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["64", "224"], "Input sides (multiples of 32).")
_BATCH = flags.DEFINE_list("batch", ["64", "16"], "Batch of each side (one value: all).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls (median).")

KINDS = ("forward", "input grad", "train step")
IMPLEMENTATIONS = {"xla": types.SimpleNamespace(conv_general_dilated=lax.conv_general_dilated),
                   "shifted": depthwise_conv}


def _programs(size: int, batch: int):
  """(forward, train step, their arguments of call i) at one input side."""
  images = lambda i: jax.random.uniform(jax.random.key(i), (batch, size, size, 3), minval=-1.0,
                                        maxval=1.0)
  folded = mobilenet_v2.MobileNetV2()
  folded_params = folded.init(jax.random.key(0), images(0)[:1])["params"]
  forward = jax.jit(lambda p, x: folded.apply({"params": p}, x)[0])
  input_gradient = jax.jit(jax.grad(
      lambda p, x: jnp.sum(jax.nn.log_softmax(folded.apply({"params": p}, x)[0])[:, 0]),
      argnums=1))
  trained = mobilenet_v2.MobileNetV2(num_classes=10, batch_norm=True)
  variables = trained.init(jax.random.key(1), images(0)[:1])
  sgd = optax.sgd(1e-3, momentum=0.9)
  labels = jnp.arange(batch) % 10

  def loss(params, stats, x):
    logits, new = trained.apply({"params": params, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits[0], labels).mean(), new

  def step(params, stats, opt, x):
    (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params, stats, x)
    updates, opt = sgd.update(grads, opt, params)
    return optax.apply_updates(params, updates), new["batch_stats"], opt, value, grads

  params, stats = variables["params"], variables["batch_stats"]
  opt = sgd.init(params)
  return ((forward, lambda i: (folded_params, images(i))),
          (input_gradient, lambda i: (folded_params, images(i))),
          (jax.jit(step), lambda i: (params, stats, opt, images(i))))


def _relative_difference(a, b) -> float:
  """Largest |a - b| over every leaf, over the largest |a| (per-leaf ratios would count the
  rounding noise of gradients that are 0 in exact arithmetic: a BatchNorm bias before
  another BatchNorm)."""
  leaves = list(zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return (max(float(jnp.max(jnp.abs(x - y))) for x, y in leaves)
          / max(float(jnp.max(jnp.abs(x))) for x, _ in leaves))


def main(argv):
  del argv
  batches = [int(b) for b in _BATCH.value] * (len(_SIZES.value) if len(_BATCH.value) == 1 else 1)
  print(f"MobileNetV2, depthwise convolutions: XLA's grouped convolution against shifted "
        f"multiply-adds; {jax.devices()[0].platform} ({platform.processor() or platform.machine()}),"
        f" medians of {_REPEATS.value}")
  for size, batch in zip((int(s) for s in _SIZES.value), batches):
    seconds, outputs = {}, {}
    for name, implementation in IMPLEMENTATIONS.items():
      mobilenet_v2.depthwise_conv = implementation  # ConvUnit looks it up at each call
      for kind, (fn, args_of_call) in zip(KINDS, _programs(size, batch)):
        compiled = fn.lower(*args_of_call(0)).compile()
        seconds[name, kind] = timing.median_seconds(compiled, args_of_call, _REPEATS.value)
        outputs[name, kind] = compiled(*args_of_call(0))
    mobilenet_v2.depthwise_conv = depthwise_conv
    for kind in KINDS:
      xla, shifted = seconds["xla", kind], seconds["shifted", kind]
      out_x, out_s = outputs["xla", kind], outputs["shifted", kind]
      diff = (_relative_difference(out_x[4], out_s[4]) if kind == "train step"
              else _relative_difference(out_x, out_s))
      print(f"  {size:3d} px, batch {batch:3d}, {kind:10s}  xla {xla:8.3f} s   shifted "
            f"{shifted:8.3f} s   ratio {xla / shifted:6.2f}x   "
            f"{'output' if kind == 'forward' else 'gradient'} difference {diff:.1e}")


if __name__ == "__main__":
  app.run(main)
