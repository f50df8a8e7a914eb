"""Where the faithful SketchXAINet step spends its time: a per-component breakdown.

  python benchmarks/sketchxainet_profile.py --data_dir=../shared/data/quickdraw/simplified

SketchXAINet-Tiny-345 in the faithful layout (196 slots, padding attended) on
real drawings, at the step of benchmarks/sketchxainet_throughput.py (batch
`--batch`, micro-batches of >= `--microbatch` sketches). Each piece of one
micro-batch is jitted on its own with the model's parameters and timed, forward
only (infer) and forward + backward to its parameters and inputs with a fixed
cotangent (train, dropout on as in training):
  bilstm        the stacked BiLSTM over the packed real strokes,
  stroke sum    summing its point outputs per stroke (segment sum, a scatter),
  token layout  location Dense + order rows + CLS concatenation,
  attention     one block's LayerNorm + multi-head attention over 197 tokens
                (+ its dropouts) + residual, x num_layers,
  mlp           one block's LayerNorm + Dense + exact GELU + Dense (+ dropout)
                + residual, x num_layers,
  head + loss   final LayerNorm, CLS Dense, softmax cross-entropy,
  adamw         the optimizer update (once a step, not per micro-batch);
and the attention and MLP split further into their operations. Each piece's
share is of the sum of the pieces (scaled by blocks and micro-batches); the
whole jitted step is timed alongside (`--full_step`) to show what the pieces
miss (fusion across pieces, the micro-batch scan, argument transfer).

Timings interleave the pieces over `--repeats` rounds and take medians of both
wall time and the process's CPU time (all its threads; on a machine shared with
other jobs the CPU time is the steadier measure of the work, the wall time the
one an idle machine shows), so on a shared machine the shares are comparable
though absolute times are not.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_reference  # noqa: E402
import sketchxainet_throughput as bench  # noqa: E402  (its --data_dir and --microbatch)
from sketchjax.models import sketchxainet  # noqa: E402
from sketchjax.models.bilstm import StrokeShapeEncoder, reduce_by_stroke  # noqa: E402
from sketchjax.models import vit  # noqa: E402
from sketchjax.training import microbatch  # noqa: E402

_BATCH = flags.DEFINE_integer("batch", 100, "Sketches a step.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved timing rounds.")
_MODES = flags.DEFINE_list("modes", ["train", "infer"], "train and/or infer.")
_FULL_STEP = flags.DEFINE_bool("full_step", True, "Also time the whole jitted step.")

DROPOUT = 0.1


def _layer_norm(p, x):
  return nn.LayerNorm(epsilon=vit.LAYER_NORM_EPS).apply({"params": p}, x)


def _dropout(key, x, train: bool):
  """Flax's nn.Dropout(0.1): keep with probability 0.9, scale kept by 1 / 0.9."""
  if not train:
    return x
  keep = jax.random.bernoulli(key, 1.0 - DROPOUT, x.shape)
  return jnp.where(keep, x / (1.0 - DROPOUT), 0)


def attention_ops(p, y, key, train: bool):
  """The block's attention (vit.head_major_attention in flax's MHA) op by op: name -> (fn, args)."""
  a = p["attention"]
  head_dim = a["query"]["kernel"].shape[-1]

  def qkv(y):  # flax's DenseGeneral [B, T, h, d], then heads first
    return tuple(jnp.swapaxes(jnp.einsum("btd,dhk->bthk", y, a[n]["kernel"]) + a[n]["bias"], 1, 2)
                 for n in ("query", "key", "value"))

  def scores_softmax(q, k):
    logits = jnp.einsum("bhqd,bhkd->bhqk", q / jnp.sqrt(head_dim).astype(q.dtype), k)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  def probs_dropout(probs):
    return _dropout(key, probs, train)

  def weighted_values(probs, v):
    return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", probs, v), 1, 2)

  def out_projection(o):
    return jnp.einsum("bqhd,hdo->bqo", o, a["out"]["kernel"]) + a["out"]["bias"]

  q, k, v = qkv(y)
  probs = scores_softmax(q, k)
  o = weighted_values(probs, v)
  ops = {"qkv projections": (qkv, (y,)), "scores + softmax": (scores_softmax, (q, k)),
         "probs dropout": (probs_dropout, (probs,)),
         "probs @ values": (weighted_values, (probs, v)), "out projection": (out_projection, (o,))}
  if not train:
    del ops["probs dropout"]
  return ops


def mlp_ops(p, x):
  """The block's MLP half op by op: name -> (fn, args)."""
  y = _layer_norm(p["norm_mlp"], x)
  h = y @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"]
  g = nn.gelu(h, approximate=False)
  return {"layernorm": (lambda x: _layer_norm(p["norm_mlp"], x), (x,)),
          "mlp_in dense": (lambda y: y @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"], (y,)),
          "gelu (erf)": (lambda h: nn.gelu(h, approximate=False), (h,)),
          "mlp_out dense": (lambda g: g @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"], (g,))}


def _block_halves(model, train: bool):
  """(attention half, mlp half) of one encoder block as functions of (params, x, key)."""
  mha = nn.MultiHeadDotProductAttention(num_heads=model.num_heads, dropout_rate=DROPOUT,
                                        broadcast_dropout=False, force_fp32_for_softmax=True,
                                        attention_fn=vit.head_major_attention)

  def attention(p, x, key):
    y = _layer_norm(p["norm_attention"], x)
    k1, k2 = jax.random.split(key)
    y = mha.apply({"params": p["attention"]}, y, y, deterministic=not train,
                  rngs={"dropout": k1})
    return x + _dropout(k2, y, train)

  def mlp(p, x, key):
    y = _layer_norm(p["norm_mlp"], x)
    y = nn.gelu(y @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"], approximate=False)
    return x + _dropout(key, y @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"], train)

  return attention, mlp


def _train_version(fn, num_args: int):
  """fn(*args) -> its value and the gradients of <fn(*args), cotangent> to every argument."""
  def grads(*args_and_ct):
    args, ct = args_and_ct[:num_args], args_and_ct[num_args]
    out, vjp = jax.vjp(fn, *args)
    return out, vjp(jax.tree.map(lambda c, o: c.astype(o.dtype), ct, out))
  return grads


def pieces(model, params, micro, train: bool, num_micro: int):
  """name -> (jitted fn, args, times a step) for one micro-batch."""
  key = jax.random.key(1)
  encoder = StrokeShapeEncoder(model.hidden)
  enc_p = params["stroke_shape"]
  stroke_len = micro["stroke_len"]
  b, slots = stroke_len.shape
  packed, index = micro["packed_points"], micro["packed_index"]
  sketch, slot = index[..., 0], index[..., 1]
  stroke_id = jnp.where(sketch < b, sketch * slots + slot, -1)[0]  # one shard
  rows = packed[0]

  def bilstm(p, rows):
    return encoder.apply({"params": p}, rows, stroke_id, method=encoder.point_outputs)

  def stroke_sum(out):
    return reduce_by_stroke(out, stroke_id, b * slots).reshape(b, slots, -1)

  def token_layout(p, shape):
    loc = micro["loc"] @ p["location"]["kernel"] + p["location"]["bias"]
    tokens = shape + loc + p["order"]["embedding"][None, :slots]
    cls = jnp.broadcast_to(p["cls_token"], (b, 1, model.hidden))
    return _dropout(key, jnp.concatenate([cls, tokens], 1), train)

  def head_loss(p, x):
    x = _layer_norm(p["encoder"]["final_norm"], x)
    logits = x[:, 0] @ p["head"]["kernel"] + p["head"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, micro["label"]).mean()

  point_out = bilstm(enc_p, rows)
  shape = stroke_sum(point_out)
  layout_p = {k: params[k] for k in ("location", "order", "cls_token")}
  x = token_layout(layout_p, shape)
  block_p = params["encoder"]["block_0"]
  attention, mlp = _block_halves(model, train)
  head_p = {"encoder": {"final_norm": params["encoder"]["final_norm"]}, "head": params["head"]}
  attn_p = {k: block_p[k] for k in ("norm_attention", "attention")}
  mlp_p = {k: block_p[k] for k in ("norm_mlp", "mlp_in", "mlp_out")}
  layers, per_step = model.num_layers, num_micro
  y = _layer_norm(block_p["norm_attention"], x)
  out = {
      "bilstm": (bilstm, (enc_p, rows), per_step),
      "stroke sum": (stroke_sum, (point_out,), per_step),
      "token layout": (token_layout, (layout_p, shape), per_step),
      "attention": (lambda p, x: attention(p, x, key), (attn_p, x), layers * per_step),
      "mlp": (lambda p, x: mlp(p, x, key), (mlp_p, x), layers * per_step),
      "head + loss": (head_loss, (head_p, x), per_step),
  }
  detail = {f"  attention: {n}": (f, a, layers * per_step)
            for n, (f, a) in attention_ops(attn_p, y, key, train).items()}
  detail.update({f"  mlp: {n}": (f, a, layers * per_step)
                 for n, (f, a) in mlp_ops(mlp_p, x).items()})
  result = {}
  for name, (fn, args, count) in {**out, **detail}.items():
    if train:
      ct = jax.tree.map(lambda o: jnp.ones_like(o) * 1e-3, jax.eval_shape(fn, *args))
      result[name] = (jax.jit(_train_version(fn, len(args))), args + (ct,), count)
    else:
      result[name] = (jax.jit(fn), args, count)
  if train:
    tx = optax.adamw(3e-4, weight_decay=1e-4)
    grads = jax.tree.map(lambda a: jnp.full_like(a, 1e-3), params)

    def adamw(p, opt, g):
      updates, opt = tx.update(g, opt, p)
      return optax.apply_updates(p, updates), opt
    result["adamw"] = (jax.jit(adamw), (params, tx.init(params), grads), 1)
  return result


def full_step(model, params, batch, train: bool, num_micro: int):
  """The throughput benchmark's jitted step on the whole batch: (fn, args)."""
  if train:
    tx = optax.adamw(3e-4, weight_decay=1e-4)

    def loss(p, b, rng):
      logits, _ = model.apply({"params": p}, b, train=True, rngs={"dropout": rng})
      return optax.softmax_cross_entropy_with_integer_labels(logits, b["label"]).mean(), {}

    def step(p, opt, batch):
      (value, _), grads = microbatch.value_and_grad(loss, p, batch, jax.random.key(1),
                                                    num_microbatches=num_micro, num_shards=1)
      updates, opt = tx.update(grads, opt, p)
      return optax.apply_updates(p, updates), opt, value
    return jax.jit(step), (params, tx.init(params), batch)
  fn = jax.jit(lambda p, batch: microbatch.concatenated(
      lambda b: model.apply({"params": p}, b, train=False)[0], batch,
      num_microbatches=num_micro, num_shards=1))
  return fn, (params, batch)


def time_interleaved(fns: dict, repeats: int) -> dict:
  """name -> median (wall s, process CPU s) of one call, the names interleaved in every round."""
  for fn, args in fns.values():  # compile and warm
    jax.block_until_ready(fn(*args))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, args) in fns.items():
      start, cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn(*args))
      times[name].append((time.perf_counter() - start, time.process_time() - cpu))
  return {name: tuple(np.median(np.asarray(t), axis=0)) for name, t in times.items()}


def _print_breakdown(parts: dict, seconds: dict, batch_size: int, column: int, what: str):
  """One table: ms a call, calls a step, ms a step and share of the pieces' sum."""
  step = {name: seconds[name][column] * count for name, (_, _, count) in parts.items()}
  total = sum(v for name, v in step.items() if not name.startswith("  "))
  print(f"  {what}: ms a call, calls a step, ms a step, share of the pieces' sum")
  for name, (_, _, count) in parts.items():
    print(f"  {name:34} {seconds[name][column] * 1e3:9.2f} x{count:3d} {step[name] * 1e3:9.1f} "
          f"{step[name] / total:6.1%}")
  print(f"  {'sum of the pieces':34} {'':14} {total * 1e3:9.1f} -> "
        f"{batch_size / total:.1f} sketches/s")
  if "whole step" in seconds:
    whole = seconds["whole step"][column]
    print(f"  {'whole jitted step':34} {'':14} {whole * 1e3:9.1f} -> "
          f"{batch_size / whole:.1f} sketches/s")


def main(argv):
  del argv
  print(f"{cpu_reference.cpu_model()}, {os.cpu_count()} cores, JAX {jax.__version__}")
  batch_size = _BATCH.value
  num_micro = bench.microbatches(batch_size, bench._MICROBATCH.value)
  batch = bench._batches(bench._DATA_DIR.value, batch_size, False, 1, shards=num_micro)[0]
  batch = {k: v for k, v in batch.items() if k != "points"}  # the packed rows are used
  model = sketchxainet.tiny(bench.NUM_CLASSES)
  params = jax.jit(lambda b: model.init({"params": jax.random.key(0)}, b, train=False)
                   ["params"])(batch)
  micro = jax.tree.map(lambda x: x[0], microbatch.split(batch, num_micro, 1))
  print(f"SketchXAINet-Tiny-{bench.NUM_CLASSES}, faithful layout: batch {batch_size} in "
        f"{num_micro} micro-batches of {batch_size // num_micro}, "
        f"{micro['stroke_len'].shape[1] + 1} tokens, packed rows "
        f"{tuple(micro['packed_points'].shape[1:3])}; median of {_REPEATS.value} interleaved "
        f"rounds")
  for mode in _MODES.value:
    train = mode == "train"
    parts = pieces(model, params, micro, train, num_micro)
    fns = {name: (fn, args) for name, (fn, args, _) in parts.items()}
    if _FULL_STEP.value:
      fns["whole step"] = full_step(model, params, batch, train, num_micro)
    seconds = time_interleaved(fns, _REPEATS.value)
    print(f"\n{mode}")
    _print_breakdown(parts, seconds, batch_size, 0, "wall time")
    _print_breakdown(parts, seconds, batch_size, 1, "process CPU time")


if __name__ == "__main__":
  app.run(main)
