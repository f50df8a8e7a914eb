"""The assisted-drawing web page: draw, see what the classifier sees, take a suggested stroke.

  python -m sketchjax.main --config=configs/draw.py --workdir=workdirs/draw

serves http://127.0.0.1:8765 (`config.host`, `config.port`; port 0 = any free
one): the page (sketchjax/draw_page/) sends the strokes after each stroke to
`POST /api/analyze` and shows the answer of `Assistant.analyze`
(sketchjax/methods/assisted_drawing.py): top classes, each stroke coloured by
its attribution for the target, and suggested next strokes to accept or
dismiss. `GET /api/classes` lists the classes and the generators.

The workdir gets `server.json` (the URL, written once the models are compiled
and the server listens) and `requests.jsonl` (per analysed request: the
strokes received, the target, what was answered and the latency). Bad requests
get a 4xx answer `{"error": message}` (sketchjax/tasks/draw_requests.py).
Starlette routes the requests and uvicorn serves them; the analysis runs in a
worker thread, one request at a time.
"""

from __future__ import annotations

import json
import pathlib
import socket
import threading
import time

from absl import logging
import ml_collections
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
import uvicorn

from sketchjax.methods import assisted_drawing
from sketchjax.models import doodlenet, sketch_rnn
from sketchjax.tasks import draw_requests
from sketchjax.tasks.sketch_rnn_samples import generator_files

PAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / "draw_page"


def load_assistant(config: ml_collections.ConfigDict) -> assisted_drawing.Assistant:
  """doodleNet from `config.model.path` and the sketch-rnn generators of
  `config.generators` (those of classes doodleNet knows)."""
  model, variables, names = doodlenet.load_doodlenet(config.model.path)
  files = generator_files(config.generators.dir, config.generators.classes)
  generators = {name: sketch_rnn.load_generator(path) for name, path in files.items()
                if name in names}
  settings = assisted_drawing.AssistSettings(**config.assist.to_dict())
  return assisted_drawing.Assistant(
      lambda images: model.apply(variables, images[..., None])[0], names, generators, settings)


def make_app(assistant: assisted_drawing.Assistant, limits: draw_requests.Limits,
             log_path: pathlib.Path) -> Starlette:
  """The page, its static files and the two API routes around `assistant`."""
  lock = threading.Lock()

  def analyze_and_log(request: draw_requests.DrawRequest) -> dict:
    with lock:
      start = time.perf_counter()
      answer = assistant.analyze(request.strokes, request.target, request.seed)
      answer["timing_ms"]["total"] = 1e3 * (time.perf_counter() - start)
      record = {"time": time.time(), "strokes": [s.tolist() for s in request.strokes],
                "target": request.target, "seed": request.seed,
                "answer": {k: answer[k] for k in ("classes", "target", "strokes", "generator",
                                                  "suggestions", "timing_ms")}}
      with log_path.open("a") as log:
        log.write(json.dumps(record) + "\n")
      return answer

  async def analyze(request: Request) -> JSONResponse:
    try:
      declared = int(request.headers.get("content-length") or 0)
      if declared > limits.max_body_bytes:  # refused before reading it
        raise draw_requests.BadRequest(
            413, f"request body of {declared} bytes, at most {limits.max_body_bytes}")
      parsed = draw_requests.parse_request(await request.body(), limits,
                                           assistant.class_names)
      return JSONResponse(await run_in_threadpool(analyze_and_log, parsed))
    except draw_requests.BadRequest as error:
      return JSONResponse({"error": str(error)}, status_code=error.status)
    except assisted_drawing.TooComplex as error:
      return JSONResponse({"error": str(error)}, status_code=422)

  async def classes(_: Request) -> JSONResponse:
    return JSONResponse({"classes": list(assistant.class_names),
                         "generators": sorted(assistant.generators)})

  async def index(_: Request) -> FileResponse:
    return FileResponse(PAGE_DIR / "index.html")

  return Starlette(routes=[
      Route("/", index), Route("/api/classes", classes),
      Route("/api/analyze", analyze, methods=["POST"]),
      Mount("/static", StaticFiles(directory=PAGE_DIR), name="static")])


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Loads and compiles the models, then serves the page until interrupted."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  assistant = load_assistant(config)
  start = time.perf_counter()
  assistant.warm_up(config.warm_up_strokes)
  logging.info("models compiled in %.1f s", time.perf_counter() - start)
  app = make_app(assistant, draw_requests.Limits(**config.limits.to_dict()),
                 workdir / "requests.jsonl")
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind((config.host, config.port))
  sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
  url = f"http://{config.host}:{sock.getsockname()[1]}"
  server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
  (workdir / "server.json").write_text(json.dumps({"url": url}))
  print(f"serving the drawing page at {url}", flush=True)
  server.run(sockets=[sock])
