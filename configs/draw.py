"""The assisted-drawing web page (doodleNet and the sketch-rnn generators).

  python -m sketchjax.main --config=configs/draw.py --workdir=workdirs/draw

then open http://127.0.0.1:8765 (another port: --config.port=N; 0 = any free
one, written to <workdir>/server.json).

Variants: `smoke` (any free port, 2 generators, fewer candidates: for tests).
"""

import pathlib

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.task = "draw"
  c.host = "127.0.0.1"
  c.port = 8765
  c.warm_up_strokes = 32  # shapes compiled before serving (drawings up to this many strokes)

  c.model = ml_collections.ConfigDict()
  c.model.path = str(REPO.parent / "shared/pretrained/doodlenet")

  c.generators = ml_collections.ConfigDict()
  c.generators.dir = str(REPO.parent / "shared/pretrained/sketch_rnn")
  c.generators.classes = "all"  # or a comma-separated list

  c.assist = ml_collections.ConfigDict()  # sketchjax.methods.assisted_drawing.AssistSettings
  c.assist.top_classes = 5
  c.assist.ig_steps = 16  # SLA path points
  c.assist.noise_fraction = 0.05  # a stroke under this share of sum |attribution| is noise
  c.assist.candidates = 12  # sketch-rnn continuations sampled per request
  c.assist.suggestions = 3  # the best of them shown
  c.assist.stroke_rows = 32  # rows sampled per continuation
  c.assist.temperature = 0.4
  c.assist.rdp_epsilon = 2.0  # as QuickDraw's simplified drawings (0..255 units)
  c.assist.supersample = 4
  c.assist.max_segments = 1024  # a drawing with more after RDP is refused (422)

  c.limits = ml_collections.ConfigDict()  # sketchjax.tasks.draw_requests.Limits
  c.limits.max_body_bytes = 1_000_000
  c.limits.max_strokes = 64
  c.limits.max_points = 10_000
  c.limits.max_coordinate = 1e6

  if arg == "smoke":
    c.port = 0
    c.warm_up_strokes = 16
    c.generators.classes = "bear,palm_tree"
    c.assist.candidates = 6
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'smoke'")
  return c
