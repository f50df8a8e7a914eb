"""Where one micro-batch of the ZSE-SBIR training step spends its time, part by part, in one
process (the training-step row of benchmarks/zse_speed.py is 5 of these micro-batches).

  python benchmarks/zse_step_parts.py                    # ViT-B/16, 224 px, 3 items (12 images)
  python benchmarks/zse_step_parts.py --variant=zse_small --image_size=64   # quick

Random init, each program jitted and warmed once, medians of --repeats, wall and process CPU
seconds. Parts (all at the training step's micro-batch: 2 x items sketches, 2 x items photos):
  loss+grad          the whole objective's value and gradient (zse.zse_objective, train=True)
  loss+grad, no dropout   the same network with every dropout rate 0 (no random bits)
  encoder fwd+bwd    the SA encoders of all images (sketches with the conv stem), gradient of
                     a random linear function of their tokens
  encoder fwd        the same forward alone (train=False)
  pairs fwd+bwd      CA + anchors + RN + loss from fixed SA tokens, gradient w.r.t. the params
  stem fwd+bwd       the conv stem alone, on the sketches
  loss+grad scanned / unrolled xM   the whole objective on M micro-batches of the same items
                     (microbatch.value_and_grad: a rolled lax.scan, and unrolled)
Each row also prints its GFLOP (XLA's cost analysis; a rolled loop's body counts once) and
GFLOP per wall second.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zse_speed  # noqa: E402  (its flags: --variant, --image_size, --repeats)

from sketchjax.methods import sbir_losses  # noqa: E402
from sketchjax.models import zse_sbir  # noqa: E402
from sketchjax.tasks import zse  # noqa: E402
from sketchjax.training import microbatch  # noqa: E402

_ITEMS = flags.DEFINE_integer("items", 3, "Items of the micro-batch (4 images each).")
_SCANNED = flags.DEFINE_integer("scanned", 2, "Micro-batches of the scanned row (0: skip it).")
_PARTS = flags.DEFINE_list("parts", [], "Rows to time (default: all).")


def _timed(fn, args, repeats: int) -> tuple[float, float]:
  """Median (wall, process CPU) seconds of fn(*args) after a warm-up call."""
  jax.block_until_ready(fn(*args))
  walls, cpus = [], []
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return float(np.median(walls)), float(np.median(cpus))


def main(argv):
  del argv
  config = zse_speed._config()  # noqa: SLF001 (the benchmark's network, random init)
  model = zse.build_model(config)
  size, items = config.data.image_size, _ITEMS.value
  params = jax.jit(lambda k: model.init(k, zse_speed._images(0, 1, size),  # noqa: SLF001
                                        zse_speed._images(1, 1, size)))(jax.random.key(0))["params"]
  names = ("sketch", "photo_positive", "sketch_negative", "photo_negative")
  batch = {n: zse_speed._images(10 + j, items, size) for j, n in enumerate(names)}  # noqa: SLF001
  sketches = jnp.concatenate([batch["sketch"], batch["sketch_negative"]])
  photos = jnp.concatenate([batch["photo_positive"], batch["photo_negative"]])
  rng = jax.random.key(1)
  config_nd = config.copy_and_resolve_references()
  config_nd.model.dropout = 0.0

  def loss_grad(objective):
    return jax.jit(jax.value_and_grad(lambda p: objective.loss(p, batch, rng)[0]))

  def encode(p, images, modality, train):
    return model.apply({"params": p}, images, modality, train=train, rngs={"dropout": rng},
                       method=model.encode)["tokens"]

  tokens = {m: encode(params, x, m, False) for m, x in (("sketch", sketches), ("photo", photos))}
  weights = {m: jax.random.normal(jax.random.key(2), t.shape) for m, t in tokens.items()}

  def encoder_objective(p):
    return sum(jnp.sum(encode(p, x, m, True) * weights[m])
               for m, x in (("sketch", sketches), ("photo", photos)))

  def pairs_objective(p):
    def pair_part(module, sk, ph):
      sa = lambda t: {"tokens": t, "kept": jnp.zeros(t.shape[:2], jnp.int32)}  # noqa: E731
      logits, aux = module.pair_logits(module.project(sa(sk), "sketch"),
                                       module.project(sa(ph), "photo"), train=True)
      return logits, aux
    logits, aux = model.apply({"params": p}, tokens["sketch"], tokens["photo"],
                              rngs={"dropout": rng}, method=pair_part)
    return sbir_losses.zse_sbir_loss(logits, aux["ca_ret_sketch"][:items],
                                     aux["ca_ret_photo"][:items], aux["ca_ret_photo"][items:],
                                     config.loss.margin)[0]

  stem = zse_sbir.ConvStem((*model.stem_features, model.hidden))
  stem_weights = jax.random.normal(jax.random.key(3), jax.eval_shape(
      lambda: stem.apply({"params": params["sa"]["conv_stem"]}, sketches)).shape)

  def stem_objective(p):
    return jnp.sum(stem.apply({"params": p["sa"]["conv_stem"]}, sketches) * stem_weights)

  def scanned_objective(p, unroll):
    objective = zse.zse_objective(model, config)
    big = {n: jnp.concatenate([x] * _SCANNED.value) for n, x in batch.items()}
    return microbatch.value_and_grad(objective.loss, p, big, rng, unroll=unroll,
                                     num_microbatches=_SCANNED.value, num_shards=1)

  parts = {
      "loss+grad": (loss_grad(zse.zse_objective(model, config)), (params,)),
      "loss+grad, no dropout": (loss_grad(zse.zse_objective(zse.build_model(config_nd), config_nd)), (params,)),
      "encoder fwd+bwd": (jax.jit(jax.value_and_grad(encoder_objective)), (params,)),
      "encoder fwd": (jax.jit(lambda p: [encode(p, x, m, False) for m, x in
                                         (("sketch", sketches), ("photo", photos))]), (params,)),
      "pairs fwd+bwd": (jax.jit(jax.value_and_grad(pairs_objective)), (params,)),
      "stem fwd+bwd (sketches)": (jax.jit(jax.value_and_grad(stem_objective)), (params,)),
      f"loss+grad scanned x{_SCANNED.value}": (jax.jit(scanned_objective, static_argnums=1),
                                                (params, False)),
      f"loss+grad unrolled x{_SCANNED.value}": (jax.jit(scanned_objective, static_argnums=1),
                                                 (params, True)),
  }
  print(f"ZSE-SBIR {zse_speed._VARIANT.value} at {size} px, micro-batch of {items} items "  # noqa: SLF001
        f"({4 * items} images), medians of {zse_speed._REPEATS.value}")  # noqa: SLF001
  for name, (fn, args) in parts.items():
    if _PARTS.value and name not in _PARTS.value:
      continue
    cost = fn.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    gflop = float(cost.get("flops", float("nan"))) / 1e9
    wall, cpu = _timed(fn, args, zse_speed._REPEATS.value)  # noqa: SLF001
    print(f"  {name:24s} {wall:8.2f} s wall {cpu:8.2f} s CPU {gflop:9.1f} GFLOP "
          f"{gflop / wall:7.1f} GFLOP/s", flush=True)


if __name__ == "__main__":
  app.run(main)
