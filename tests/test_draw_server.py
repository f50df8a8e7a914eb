"""The drawing server's routes (Starlette's test client, a stand-in for the models): the
page and its files, the analysis route, its log, and bad requests answered 4xx while the
server keeps serving. The real models behind real HTTP: tests/test_draw_e2e.py."""

import json

import pytest
from starlette.testclient import TestClient

from sketchjax.methods import assisted_drawing
from sketchjax.tasks import draw
from sketchjax.tasks.draw_requests import Limits


class _EchoAssistant:
  """Answers like `Assistant.analyze`, from the request alone."""

  class_names = ("cat", "palm tree")
  generators = {"palm tree": None}

  def analyze(self, strokes, target, seed):
    if sum(len(s) for s in strokes) > 50:
      raise assisted_drawing.TooComplex("too many segments")
    return {"classes": [{"name": "cat", "probability": 0.9}], "target": target or "cat",
            "target_probability": 0.9,
            "strokes": [{"attribution": 1.0, "label": "helps"} for _ in strokes],
            "generator": "palm tree", "seed": seed,
            "suggestions": [{"points": [[1.0, 2.0]], "gain": 0.1, "probability": 0.95}],
            "timing_ms": {"explain": 1.0, "suggest": 1.0}}


@pytest.fixture
def client(tmp_path):
  app = draw.make_app(_EchoAssistant(), Limits(max_points=100), tmp_path / "requests.jsonl")
  with TestClient(app) as client:
    yield client


def test_the_page_and_its_files_are_served(client):
  page = client.get("/")
  assert page.status_code == 200 and '<canvas id="canvas"' in page.text
  for name, kind in (("draw.js", "javascript"), ("draw.css", "css")):
    served = client.get(f"/static/{name}")
    assert served.status_code == 200 and kind in served.headers["content-type"]
  assert client.get("/api/classes").json() == {"classes": ["cat", "palm tree"],
                                               "generators": ["palm tree"]}


def test_an_analysis_is_answered_and_logged(client, tmp_path):
  strokes = [[[1, 2], [3, 4]], [[5, 6]]]
  answer = client.post("/api/analyze", json={"strokes": strokes, "target": "palm tree",
                                             "seed": 3})
  assert answer.status_code == 200
  body = answer.json()
  assert body["target"] == "palm tree" and body["seed"] == 3 and len(body["strokes"]) == 2
  assert body["timing_ms"]["total"] >= 0
  (record,) = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
  assert record["strokes"] == strokes and record["target"] == "palm tree" and record["seed"] == 3
  assert record["answer"]["suggestions"] == body["suggestions"]


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400), (b'{"strokes": []}', 422), (b'{"strokes": [[[NaN, 1]]]}', 422),
    (json.dumps({"strokes": [[[0, 0]] * 100_000]}).encode(), 413),
    (b'{"strokes": [[["a", 1]]]}', 422), (b'{"strokes": [[[1, 1]]], "target": 5}', 422),
    (json.dumps({"strokes": [[[i, i % 7] for i in range(60)]]}).encode(), 422),  # TooComplex
])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(client, tmp_path, body, status):
  refused = client.post("/api/analyze", content=body,
                        headers={"content-type": "application/json"})
  assert refused.status_code == status and refused.json()["error"]
  assert not (tmp_path / "requests.jsonl").exists()  # nothing reached the models
  assert client.post("/api/analyze", json={"strokes": [[[1, 2]]]}).status_code == 200


def test_an_oversized_body_is_refused_before_it_is_read(client):
  refused = client.post("/api/analyze", content=b"{}",
                        headers={"content-length": str(10**9)})
  assert refused.status_code == 413 and "1000000000 bytes" in refused.json()["error"]


def test_only_post_analyses(client):
  assert client.get("/api/analyze").status_code == 405
