"""The drawing page end to end: `python -m sketchjax.main --config=configs/draw.py:smoke`
serves doodleNet and two sketch-rnn generators; real HTTP requests, then Debian's chromium
(headless, through chromium-driver) drawing with real pointer events."""

import json
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA, SHARED_PRETRAINED, need

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """(url, workdir) of the draw task run from the command line; stopped after the module."""
  need(SHARED_PRETRAINED)
  workdir = tmp_path_factory.mktemp("draw")
  log = (workdir / "server.log").open("w")
  process = subprocess.Popen(
      [sys.executable, "-m", "sketchjax.main", "--config=configs/draw.py:smoke",
       f"--workdir={workdir}"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + 300
  while not (workdir / "server.json").exists():
    if process.poll() is not None or time.monotonic() > deadline:
      process.kill()
      pytest.fail(f"the draw server did not start:\n{(workdir / 'server.log').read_text()}")
    time.sleep(0.5)
  yield json.loads((workdir / "server.json").read_text())["url"], workdir
  process.terminate()  # uvicorn shuts down, then ends by the signal it caught
  assert process.wait(timeout=60) in (0, -15), (workdir / "server.log").read_text()


def _post(url: str, body: bytes) -> tuple[int, dict]:
  request = urllib.request.Request(f"{url}/api/analyze", data=body,
                                   headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=60) as answer:
      return answer.status, json.loads(answer.read())
  except urllib.error.HTTPError as error:
    return error.code, json.loads(error.read())


def _palm_tree() -> list[list[list[float]]]:
  path = need(SHARED_DATA / "quickdraw" / "simplified" / "palm tree.ndjson")
  drawing = json.loads(path.read_text().splitlines()[0])["drawing"]
  return [np.stack(stroke[:2], axis=1).tolist() for stroke in drawing]


def test_the_real_models_answer_a_real_drawing(server):
  url, _ = server
  strokes = _palm_tree()
  status, answer = _post(url, json.dumps({"strokes": strokes, "target": "palm tree"}).encode())
  assert status == 200, answer
  probabilities = [c["probability"] for c in answer["classes"]]
  assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
  assert answer["classes"][0]["name"] == "palm tree"  # doodleNet knows this drawing
  assert answer["target"] == answer["generator"] == "palm tree"
  assert len(answer["strokes"]) == len(strokes)
  assert {s["label"] for s in answer["strokes"]} <= {"helps", "hurts", "noise"}
  gains = [s["gain"] for s in answer["suggestions"]]
  assert 1 <= len(gains) <= 3 and gains == sorted(gains, reverse=True)
  for suggestion in answer["suggestions"]:
    assert suggestion["probability"] == pytest.approx(
        answer["target_probability"] + suggestion["gain"], abs=1e-4)


def test_bad_requests_get_4xx_and_the_real_server_keeps_serving(server):
  url, _ = server
  for body, status in ((b"{oops", 400), (b'{"strokes": []}', 422),
                       (b'{"strokes": [[[NaN, 0]]]}', 422),
                       (json.dumps({"strokes": [[[1, 1]] * 100_000]}).encode(), 413),
                       (b'{"strokes": [[[1, 1]]], "target": ["cat"]}', 422),
                       (json.dumps({"strokes": [np.random.default_rng(0).uniform(
                           0, 400, (10_000, 2)).round(1).tolist()]}).encode(), 422)):
    got, answer = _post(url, body)
    assert got == status and answer["error"], (body[:40], answer)
    good, _ = _post(url, b'{"strokes": [[[0, 0], [10, 10]]]}')
    assert good == 200


@pytest.fixture(scope="module")
def browser():
  if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no headless browser: the browser test needs Debian's chromium and "
                "chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does)")
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                   "--window-size=1100,760", "--force-device-scale-factor=1"):
    options.add_argument(argument)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  yield driver
  driver.quit()


def _draw(driver, canvas, points, kind):
  """One stroke with real pointer events: down, moves, up (`points` in canvas pixels)."""
  from selenium.webdriver.common.actions.action_builder import ActionBuilder
  from selenium.webdriver.common.actions.pointer_input import PointerInput
  pointer = PointerInput(kind, kind)
  actions = ActionBuilder(driver, mouse=pointer, duration=5)
  # move_to offsets are from the element's centre; the canvas is 480 + 2 border pixels.
  to = lambda x, y: actions.pointer_action.move_to(canvas, round(x - 240), round(y - 240))
  to(*points[0]).pointer_down()
  for x, y in points[1:]:
    to(x, y)
  actions.pointer_action.pointer_up()
  actions.perform()


def _wait_for_answer(driver, count):
  from selenium.webdriver.support.ui import WebDriverWait
  WebDriverWait(driver, 60).until(
      lambda d: d.execute_script("return document.body.dataset.answered") == str(count))
  error = driver.execute_script("return document.getElementById('status').className")
  assert error != "error", driver.find_element("id", "status").text


def _pixel(driver, x, y) -> str:
  return driver.execute_script(
      "const [r, g, b] = document.getElementById('canvas').getContext('2d')"
      ".getImageData(arguments[0], arguments[1], 1, 1).data;"
      "return '#' + [r, g, b].map((v) => v.toString(16).padStart(2, '0')).join('');", x, y)


def _records(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / "requests.jsonl").read_text().splitlines()]


def test_the_page_in_a_headless_browser(server, browser):
  from selenium.webdriver.common.actions import interaction
  from selenium.webdriver.common.by import By
  url, workdir = server
  before = len(_records(workdir)) if (workdir / "requests.jsonl").exists() else 0
  browser.get(url)
  canvas = browser.find_element(By.ID, "canvas")
  angles = np.linspace(0, 2 * np.pi, 24)
  strokes = [np.c_[240 + 120 * np.cos(angles), 240 + 120 * np.sin(angles)],  # a face
             np.c_[np.linspace(200, 280, 6), np.full(6, 290)],
             np.c_[np.full(4, 200), np.linspace(200, 215, 4)]]
  kinds = (interaction.POINTER_MOUSE, interaction.POINTER_PEN, interaction.POINTER_PEN)
  colours = browser.execute_script("return COLOURS")
  for k, (stroke, kind) in enumerate(zip(strokes, kinds)):
    _draw(browser, canvas, stroke.tolist(), kind)
    _wait_for_answer(browser, k + 1)
    shown = browser.find_elements(By.CSS_SELECTOR, "#strokes li")
    assert len(shown) == k + 1
    for drawn, item in zip(strokes, shown):  # each stroke is drawn in its label's colour
      x, y = drawn[len(drawn) // 2]
      assert _pixel(browser, round(x), round(y)) == colours[item.get_attribute("data-label")]
    browser.save_screenshot(str(workdir / f"page_{k + 1}_strokes.png"))
  received = _records(workdir)[before:]
  assert [len(r["strokes"]) for r in received] == [1, 2, 3]
  for drawn, got in zip(strokes, received[-1]["strokes"]):  # what the server received
    np.testing.assert_allclose(got, drawn, atol=1.5)
  assert len(browser.find_elements(By.CSS_SELECTOR, "#classes li")) == 5

  suggestions = browser.execute_script("return state.suggestions")
  items = browser.find_elements(By.CSS_SELECTOR, "#suggestions li.suggestion")
  assert 1 <= len(items) == len(suggestions) <= 3
  items[0].find_element(By.CSS_SELECTOR, "button.accept").click()
  _wait_for_answer(browser, 4)
  browser.save_screenshot(str(workdir / "page_accepted.png"))
  assert len(browser.find_elements(By.CSS_SELECTOR, "#strokes li")) == 4
  accepted = _records(workdir)[-1]["strokes"]
  assert len(accepted) == 4
  np.testing.assert_allclose(accepted[-1], suggestions[0]["points"], atol=1e-6)

  remaining = browser.find_elements(By.CSS_SELECTOR, "#suggestions li.suggestion")
  if remaining:
    remaining[0].find_element(By.CSS_SELECTOR, "button.dismiss").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#suggestions li.suggestion")) == len(
        remaining) - 1
  second = browser.find_elements(By.CSS_SELECTOR, "#classes li")[1].get_attribute("data-name")
  browser.find_elements(By.CSS_SELECTOR, "#classes li")[1].click()  # explain another class
  _wait_for_answer(browser, 5)
  assert _records(workdir)[-1]["target"] == second
  assert browser.find_element(By.ID, "target-name").text.startswith(second)
  browser.save_screenshot(str(workdir / "page_other_target.png"))
