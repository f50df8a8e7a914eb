"""Latency of the assisted-drawing server per stroke, against the 300 ms goal.

Starts `python -m sketchjax.main --config=configs/draw.py` (any free port; the
server compiles its shapes before it listens: the warm-up), then replays real
QuickDraw drawings stroke by stroke, as the page does: after each stroke one
POST /api/analyze with all the strokes so far (in a 480-pixel canvas's units),
the target the top class or, with --target=label, the drawing's class. Prints
the wall time of each request as the client sees it (HTTP and JSON included):
median, p90, max, the share over 300 ms, the server's own split (explain =
classify + SLA, suggest = sketch-rnn continuations + scoring), the machine's
load, and the target's probability gain of the best suggestion against the mean of
those returned (all candidates with --server_flag=--config.assist.suggestions=12: the
gain of an unranked sketch-rnn sample, the baseline without the classifier's ranking).

  python benchmarks/draw_latency.py --drawings=40
  python benchmarks/draw_latency.py --drawings=28 --categories=generators --target=label \
      --server_flag=--config.assist.suggestions=12
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

from sketchjax.data.formats import folder

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOAL_MS = 300.0


def _drawings(count: int, categories: str) -> list:
  """`count` real drawings as 480-pixel strokes: one a category spread over all of them,
  or (`categories="generators"`) taken in turn from the sketch-rnn generators' classes."""
  files = folder.list_category_files(SHARED / "data" / "quickdraw" / "simplified")
  if categories == "generators":
    names = sorted(p.name.removesuffix(".gen.json").replace("_", " ")
                   for p in (SHARED / "pretrained" / "sketch_rnn").glob("*.gen.json"))
    chosen = [(names[i % len(names)], i // len(names)) for i in range(count)]
  else:
    names = sorted(files)
    chosen = [(names[i], 0) for i in np.linspace(0, len(names) - 1, count).round().astype(int)]
  out = []
  for name, index in chosen:
    drawing = folder.read_drawings(files[name])[index]
    out.append((name, [(s * 1.6 + 36).round(1).tolist() for s in drawing.sketch.strokes]))
  return out


def _start_server(workdir: str, extra: list[str]) -> tuple[subprocess.Popen, str, float]:
  start = time.perf_counter()
  log = open(os.path.join(workdir, "server.log"), "w")
  process = subprocess.Popen([sys.executable, "-m", "sketchjax.main",
                              "--config=configs/draw.py", f"--workdir={workdir}",
                              "--config.port=0", *extra], cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT)
  server_json = pathlib.Path(workdir) / "server.json"
  while not server_json.exists():
    if process.poll() is not None:
      sys.exit(f"the server stopped:\n{pathlib.Path(workdir, 'server.log').read_text()}")
    time.sleep(0.2)
  return process, json.loads(server_json.read_text())["url"], time.perf_counter() - start


def _post(url: str, body: dict) -> tuple[dict, float]:
  request = urllib.request.Request(f"{url}/api/analyze", data=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
  start = time.perf_counter()
  with urllib.request.urlopen(request, timeout=120) as answer:
    parsed = json.loads(answer.read())
  return parsed, 1e3 * (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--drawings", type=int, default=40)
  parser.add_argument("--categories", choices=("spread", "generators"), default="spread")
  parser.add_argument("--target", choices=("top", "label"), default="top")
  parser.add_argument("--server_flag", action="append", default=[],
                      help="extra --config.x=y flags for the server")
  args = parser.parse_args()
  drawings = _drawings(args.drawings, args.categories)
  with tempfile.TemporaryDirectory() as workdir:
    process, url, startup = _start_server(workdir, args.server_flag)
    try:
      load_before = os.getloadavg()
      latencies, explain, suggest, strokes = [], [], [], []
      best_gain, mean_gain = [], []
      for name, drawing in drawings:
        for k in range(1, len(drawing) + 1):
          body = {"strokes": drawing[:k], "target": name if args.target == "label" else None}
          answer, ms = _post(url, body)
          latencies.append(ms)
          strokes.append(k)
          explain.append(answer["timing_ms"]["explain"])
          suggest.append(answer["timing_ms"]["suggest"])
          if answer["suggestions"]:
            gains = [s["gain"] for s in answer["suggestions"]]
            best_gain.append(gains[0])
            mean_gain.append(np.mean(gains))
      load_after = os.getloadavg()
    finally:
      process.terminate()
      process.wait(timeout=60)
  latencies = np.array(latencies)
  median, p90 = np.percentile(latencies, [50, 90])
  load = lambda values: tuple(round(x, 2) for x in values)
  print(f"machine: {os.cpu_count()} CPUs; load average (1, 5, 15 min) before "
        f"{load(load_before)}, after {load(load_after)}")
  print(f"server start with warm-up (compiles): {startup:.1f} s")
  print(f"{len(latencies)} requests ({len(drawings)} real drawings replayed stroke by stroke, "
        f"1 to {max(strokes)} strokes; target: {args.target})")
  print(f"latency per stroke: median {median:.0f} ms, p90 {p90:.0f} ms, max "
        f"{latencies.max():.0f} ms; over {GOAL_MS:.0f} ms: {np.mean(latencies > GOAL_MS):.1%}")
  print(f"server split (median): explain {np.median(explain):.0f} ms, suggest "
        f"{np.median(suggest):.0f} ms")
  best_gain = np.array(best_gain)
  print(f"target's probability gain (points) in {len(best_gain)} answers: best suggestion "
        f"mean {100 * best_gain.mean():+.1f}, > 0 in {np.mean(best_gain > 0):.1%}; mean of "
        f"the suggestions returned {100 * np.mean(mean_gain):+.1f} (with "
        f"--config.assist.suggestions equal to candidates: an unranked sample's)")
  verdict = "met" if p90 <= GOAL_MS else "NOT met"
  print(f"goal: answer within {GOAL_MS:.0f} ms a stroke after warm-up (p90): {verdict}")


if __name__ == "__main__":
  main()
