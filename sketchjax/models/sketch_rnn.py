"""sketch-rnn unconditional generators (Ha & Eck 2017), loaded from the sketch-rnn JS files.

The Magenta sketch-rnn-js models (`<class>.gen.json`, ../shared/pretrained/
sketch_rnn) are decoder-only LSTMs (512 units) whose output at each step is a
20-component bivariate-Gaussian mixture over the next pen offset and three
pen-state logits. `load_generator` reads a file with json, base64 and numpy;
`sample` draws sketches from it in one jitted `lax.scan` over steps, batched
over sketches; `continue_stroke5` feeds partial drawings through the decoder,
then samples their continuations (`first_stroke` cuts out the next stroke).

Format (the reference JavaScript): `[info, shapes, weights]`; each weight is a
base64 string of little-endian int16 `v`, the float32 value is
float32(float32(v / 32767) * 10); order: output kernel [512, 123], output bias
[123], LSTM input kernel [5, 2048], recurrent kernel [512, 2048], bias [2048].
The LSTM's four 512-wide gate blocks are in the order input i, candidate g,
forget f (with a forget bias of 1.0), output o.

Units: the model works in offsets divided by `info["scale_factor"]`; `sample`
returns stroke-3 offsets in drawing units (QuickDraw's simplified 0..255
canvas), i.e. multiplied back by the scale factor.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import pathlib
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sketchjax.sketch.sketch import Sketch, to_stroke5

NUM_MIXTURES = 20
HIDDEN = 512
OUTPUT = 3 + 6 * NUM_MIXTURES  # pen logits, then mixture logits, mu_x, mu_y, log sx, log sy, rho
_SHAPES = ((HIDDEN, OUTPUT), (OUTPUT,), (5, 4 * HIDDEN), (HIDDEN, 4 * HIDDEN), (4 * HIDDEN,))


class GeneratorParams(NamedTuple):
  """The weights of one generator (float32)."""

  output_kernel: jax.Array  # [512, 123]
  output_bias: jax.Array  # [123]
  input_kernel: jax.Array  # [5, 2048]
  recurrent_kernel: jax.Array  # [512, 2048]
  lstm_bias: jax.Array  # [2048]


@dataclasses.dataclass(frozen=True)
class GeneratorInfo:
  """The file's settings.

  Attributes:
    name: the class it draws (the file's spelling, e.g. "palm_tree").
    max_seq_len: the longest sketch, in stroke-5 steps.
    scale_factor: drawing units per model unit.
  """

  name: str
  max_seq_len: int
  scale_factor: float


def decode_weight(text: str, shape: tuple[int, ...]) -> np.ndarray:
  """One base64 int16 weight string -> float32 array of `shape` (v / 32767 * 10)."""
  values = np.frombuffer(base64.b64decode(text), dtype="<i2")
  if values.size != int(np.prod(shape)):
    raise ValueError(f"a weight of shape {shape} needs {int(np.prod(shape))} values, "
                     f"the string holds {values.size}")
  scaled = (values.astype(np.float32) / np.float32(32767)).astype(np.float32)
  return (scaled * np.float32(10)).reshape(shape)


def load_generator(path: str | pathlib.Path) -> tuple[GeneratorInfo, GeneratorParams]:
  """Reads a sketch-rnn JS unconditional generator (`<class>.gen.json`).

  Both published `info` versions are accepted (version 6 with mode 2, and
  version 2 with mode "gen"); anything else (a VAE, another layout) raises a
  ValueError naming the file.
  """
  path = pathlib.Path(path)
  try:
    info, shapes, weights = json.loads(path.read_text())
  except (json.JSONDecodeError, ValueError, TypeError) as error:
    raise ValueError(f"{path}: not a sketch-rnn JS model ([info, shapes, weights]): "
                     f"{error}") from error
  if info.get("mode") not in (2, "gen"):
    raise ValueError(f"{path}: mode {info.get('mode')!r} is not an unconditional generator "
                     "(2 or 'gen')")
  shapes = tuple(tuple(s) for s in shapes)
  if shapes != _SHAPES:
    raise ValueError(f"{path}: weight shapes {shapes}, expected {_SHAPES} (a 512-unit LSTM "
                     f"with {NUM_MIXTURES} mixtures)")
  params = GeneratorParams(*(jnp.asarray(decode_weight(w, s)) for w, s in zip(weights, shapes)))
  return GeneratorInfo(str(info["name"]), int(info["max_seq_len"]),
                       float(info["scale_factor"])), params


def lstm_step(params: GeneratorParams, carry: tuple[jax.Array, jax.Array],
              x: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
  """One LSTM step of the reference code: x [B, 5], carry (c, h) [B, 512] -> (c', h'), h'."""
  c, h = carry
  gates = x @ params.input_kernel + h @ params.recurrent_kernel + params.lstm_bias
  i, g, f, o = jnp.split(gates, 4, axis=-1)
  c = c * jax.nn.sigmoid(f + 1.0) + jnp.tanh(g) * jax.nn.sigmoid(i)
  h = jnp.tanh(c) * jax.nn.sigmoid(o)
  return (c, h), h


class MixtureOutput(NamedTuple):
  """The distribution of the next step, each [B, 20] but pen_logits [B, 3]."""

  pen_logits: jax.Array
  mixture_logits: jax.Array
  mu_x: jax.Array
  mu_y: jax.Array
  sigma_x: jax.Array
  sigma_y: jax.Array
  rho: jax.Array


def mixture_output(params: GeneratorParams, h: jax.Array) -> MixtureOutput:
  """h [B, 512] -> the next step's mixture (sigma = exp, rho = tanh of the raw outputs)."""
  y = h @ params.output_kernel + params.output_bias
  pen, logits, mu_x, mu_y, log_sx, log_sy, raw_rho = jnp.split(
      y, [3 + k * NUM_MIXTURES for k in range(6)], axis=-1)
  return MixtureOutput(pen, logits, mu_x, mu_y, jnp.exp(log_sx), jnp.exp(log_sy),
                       jnp.tanh(raw_rho))


def _sample_step(out: MixtureOutput, rng: jax.Array, temperature: float) -> jax.Array:
  """Samples stroke-5 rows [B, 5] (offsets in model units) from `out`.

  As the reference code: the pen state and the component from softmax(logits /
  temperature), then the offset from that component's Gaussian with its
  variances multiplied by the temperature.
  """
  pen_rng, mix_rng, normal_rng = jax.random.split(rng, 3)
  pen = jax.random.categorical(pen_rng, out.pen_logits / temperature)
  component = jax.random.categorical(mix_rng, out.mixture_logits / temperature)
  pick = lambda a: jnp.take_along_axis(a, component[:, None], axis=1)[:, 0]
  mu_x, mu_y, rho = pick(out.mu_x), pick(out.mu_y), pick(out.rho)
  sx, sy = pick(out.sigma_x) * jnp.sqrt(temperature), pick(out.sigma_y) * jnp.sqrt(temperature)
  z1, z2 = jax.random.normal(normal_rng, (2, *mu_x.shape))
  dx = mu_x + sx * z1
  dy = mu_y + sy * (rho * z1 + jnp.sqrt(1.0 - rho**2) * z2)
  return jnp.concatenate([dx[:, None], dy[:, None], jax.nn.one_hot(pen, 3)], axis=-1)


Carry = tuple[jax.Array, jax.Array]  # the LSTM's (c, h), each [B, 512]


def start_state(params: GeneratorParams, num: int, magenta_start: bool = False) -> Carry:
  """The state of `num` sketches after the start token: [0, 0, 0, 0, 0] (the reference
  JavaScript) or, with `magenta_start`, [0, 0, 1, 0, 0] (Magenta's Python training code)."""
  start = jnp.zeros((num, 5), jnp.float32)
  if magenta_start:
    start = start.at[:, 2].set(1.0)
  zeros = jnp.zeros((num, HIDDEN), jnp.float32)
  return lstm_step(params, (zeros, zeros), start)[0]


def feed(params: GeneratorParams, carry: Carry, rows: jax.Array, lengths: jax.Array) -> Carry:
  """Steps the LSTM through each sketch's first `lengths[b]` rows of stroke-5 `rows`
  float[B, T, 5] (model units); a sketch's state stays put past its length. A loop of
  max(lengths) steps: padding rows beyond every length cost nothing."""
  def step(t, carry):
    stepped, _ = lstm_step(params, carry, rows[:, t])
    inside = (t < lengths)[:, None]
    return jax.tree.map(lambda new, old: jnp.where(inside, new, old), stepped, carry)

  return jax.lax.fori_loop(0, jnp.max(lengths), step, carry)


def sample_from(params: GeneratorParams, carry: Carry, rng: jax.Array, steps: int,
                temperature: float) -> jax.Array:
  """`steps` stroke-5 rows float32[B, steps, 5] (model units) sampled after `carry`: each
  row from the mixture of the current h, then fed back."""
  def step(carry, step_rng):
    row = _sample_step(mixture_output(params, carry[1]), step_rng, temperature)
    carry, _ = lstm_step(params, carry, row)
    return carry, row

  _, rows = jax.lax.scan(step, carry, jax.random.split(rng, steps))
  return jnp.swapaxes(rows, 0, 1)


@functools.partial(jax.jit, static_argnames=("num", "steps", "temperature", "magenta_start"))
def sample_stroke5(params: GeneratorParams, rng: jax.Array, num: int, steps: int,
                   temperature: float = 0.65, magenta_start: bool = False) -> jax.Array:
  """`num` sketches of `steps` stroke-5 rows float32[num, steps, 5] in model units.

  Rows after a sketch's first pen_end are meaningless (the caller cuts there).
  """
  return sample_from(params, start_state(params, num, magenta_start), rng, steps, temperature)


@functools.partial(jax.jit, static_argnames=("num", "steps", "temperature", "magenta_start"))
def continue_stroke5(params: GeneratorParams, rows: jax.Array, lengths: jax.Array,
                     rng: jax.Array, num: int, steps: int, temperature: float = 0.65,
                     magenta_start: bool = False) -> jax.Array:
  """Continuations of partial drawings: `num` samples of `steps` rows after each prefix.

  The generators are unconditional (no latent z; a conditional sketch-rnn would
  encode z from the whole drawing and feed it at every step), so a prefix is
  given to the decoder only through its state: the start token, then the
  prefix's rows fed as if the model had drawn them, then sampling.

  Args:
    rows: float[B, T, 5] the prefixes' stroke-5 rows in model units (`prefix_stroke5`).
    lengths: int[B] real rows of each prefix (the rest is padding).
    rng: sampling key; num, steps, temperature: as `sample_stroke5`.
  Returns:
    float32[B, num, steps, 5] in model units.
  """
  carry = feed(params, start_state(params, rows.shape[0], magenta_start), rows, lengths)
  carry = jax.tree.map(lambda x: jnp.repeat(x, num, axis=0), carry)
  out = sample_from(params, carry, rng, steps, temperature)
  return out.reshape(rows.shape[0], num, steps, 5)


def prefix_stroke5(strokes: Sequence[np.ndarray], scale_factor: float) -> np.ndarray:
  """Absolute polylines (drawing units) -> their stroke-5 rows float32[L, 5] in model units
  (the first row is the first point's offset from the origin, as in the sketch-rnn data)."""
  rows = to_stroke5(Sketch(tuple(strokes))).astype(np.float32)
  rows[:, :2] /= scale_factor
  return rows


def first_stroke(rows: np.ndarray, scale_factor: float, origin: np.ndarray) -> np.ndarray:
  """The next stroke of a continuation: sampled rows [T, 5] (model units) after a
  prefix whose last point is `origin` -> its absolute points float32[n, 2] in drawing
  units, up to the first pen lift (n = 0 when the model ends the drawing first).

  The first row is the pen-up move to the stroke's start; a pen_end row carries no
  offset, so the stroke stops before it; a stroke still drawing after T rows is cut.
  """
  rows = np.asarray(rows)
  ends = np.flatnonzero(rows[:, 4] > 0.5)
  rows = rows[:ends[0]] if ends.size else rows
  lifts = np.flatnonzero(rows[:, 3] > 0.5)
  rows = rows[:lifts[0] + 1] if lifts.size else rows
  points = np.asarray(origin, np.float32) + np.cumsum(rows[:, :2] * scale_factor, axis=0)
  return points.astype(np.float32).reshape(-1, 2)


def stroke5_to_stroke3(rows: np.ndarray, scale_factor: float) -> np.ndarray:
  """One sampled sketch's stroke-5 rows [T, 5] (model units) -> stroke-3 [L, 3] in drawing
  units, cut before the first pen_end (the end row carries no offset)."""
  rows = np.asarray(rows)
  ends = np.flatnonzero(rows[:, 4] > 0.5)
  rows = rows[:ends[0]] if ends.size else rows
  stroke3 = np.zeros((len(rows), 3), np.float32)
  stroke3[:, :2] = rows[:, :2] * scale_factor
  stroke3[:, 2] = rows[:, 3]
  if len(stroke3):
    stroke3[-1, 2] = 1.0  # the last stroke ends with the sketch
  return stroke3


def sample(info: GeneratorInfo, params: GeneratorParams, rng: jax.Array, num: int, *,
           temperature: float = 0.65, magenta_start: bool = False) -> list[np.ndarray]:
  """`num` sketches, each stroke-3 float32[L, 3] in drawing units (L may be 0 for a sketch
  that ends at once: callers drop those)."""
  rows = np.asarray(sample_stroke5(params, rng, num, info.max_seq_len, temperature,
                                   magenta_start))
  return [stroke5_to_stroke3(r, info.scale_factor) for r in rows]
