"""Bad input through the command line: each case ends with exactly one
`error: <message>` line on stderr, no traceback, and exit status 1."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "--config=configs/quickstart.py:smoke"
SQUARE = {"word": "square", "countrycode": "US", "timestamp": "2017-03-01 00:00:00.0 UTC",
          "recognized": True, "key_id": "1", "drawing": [[[0, 90, 90, 0, 0], [0, 0, 90, 90, 0]]]}


def _main(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, "-m", "sketchjax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def _error_line(proc: subprocess.CompletedProcess) -> str:
  """The one `error:` line of a failed run (asserting there is exactly one)."""
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
  """A workdir trained for 2 smoke steps (procedural classes, hidden 32)."""
  workdir = tmp_path_factory.mktemp("trained")
  proc = _main(SMOKE, f"--workdir={workdir}", "--config.train.num_steps=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def _evaluate(workdir: pathlib.Path, eval_dir: pathlib.Path) -> subprocess.CompletedProcess:
  return _main(SMOKE, f"--workdir={workdir}", "--config.mode=evaluate",
               f"--config.data.eval_dir={eval_dir}")


def _folder(tmp_path: pathlib.Path, files: dict[str, bytes | str]) -> pathlib.Path:
  folder = tmp_path / "eval"
  folder.mkdir()
  for name, content in files.items():
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(folder / name, mode) as f:
      f.write(content)
  return folder


def test_unknown_config_key(tmp_path):
  line = _error_line(_main(SMOKE, f"--workdir={tmp_path}", "--config.train.num_step=1"))
  assert line == ("error: --config.train.num_step=1: the config has no key 'num_step'; "
                  'Did you mean "num_steps" instead of "num_step"?')


def test_value_of_the_wrong_type(tmp_path):
  line = _error_line(_main(SMOKE, f"--workdir={tmp_path}", "--config.train.num_steps=abc"))
  assert line == ("error: flag --config.train.num_steps=abc: invalid literal for int() "
                  "with base 10: 'abc'")


def test_unknown_config_variant(tmp_path):
  line = _error_line(_main("--config=configs/quickstart.py:huge", f"--workdir={tmp_path}"))
  assert "unknown variant 'huge'; expected 'smoke'" in line


def test_missing_data_folder_says_how_to_get_the_data(tmp_path):
  line = _error_line(_main(SMOKE, f"--workdir={tmp_path}", "--config.data.source=quickdraw",
                           "--config.data.dir=/nonexistent"))
  assert "'/nonexistent' is not a folder" in line
  assert "--config.data.dir=<folder>" in line and "--config.data.download=True" in line


@pytest.fixture(scope="module")
def rejected(trained, tmp_path_factory):
  """(workdir, process) of rerunning the trained workdir with a wider model."""
  workdir = tmp_path_factory.mktemp("rejected") / "run"
  shutil.copytree(trained, workdir)
  return workdir, _main(SMOKE, f"--workdir={workdir}", "--config.train.num_steps=4",
                        "--config.model.hidden=48")


def test_checkpoint_of_another_model_shape(rejected):
  workdir, proc = rejected
  line = _error_line(proc)
  assert "checkpoint of step 2" in line and "another shape" in line
  assert "cls_token is (1, 1, 32) there, (1, 1, 48) here" in line
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]


def test_a_rejected_run_leaves_the_trained_config(rejected):
  workdir, _ = rejected
  assert json.loads((workdir / "config.json").read_text())["model"]["hidden"] == 32


def test_empty_eval_folder(trained, tmp_path):
  line = _error_line(_evaluate(trained, _folder(tmp_path, {})))
  assert line == f"error: no category files (.ndjson, .npz, .bin) in {tmp_path / 'eval'}"


def test_eval_folder_with_only_a_file_of_unknown_format(trained, tmp_path):
  line = _error_line(_evaluate(trained, _folder(tmp_path, {"square.txt": "a square"})))
  assert line == f"error: no category files (.ndjson, .npz, .bin) in {tmp_path / 'eval'}"


def test_files_of_unknown_format_beside_category_files_are_ignored(trained, tmp_path):
  eval_dir = _folder(tmp_path, {"square.ndjson": json.dumps(SQUARE) + "\n",
                                "notes.txt": "not a sketch file", ".DS_Store": b"\0\1"})
  proc = _evaluate(trained, eval_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.splitlines()[-1])["sketches"] == 1


def test_malformed_ndjson_line_names_file_and_line(trained, tmp_path):
  eval_dir = _folder(tmp_path, {"square.ndjson": json.dumps(SQUARE) + '\n{"word": "squ\n'})
  line = _error_line(_evaluate(trained, eval_dir))
  assert line.startswith(f"error: {eval_dir / 'square.ndjson'}:2: malformed JSON: ")


def test_binary_file_named_ndjson_names_the_file(trained, tmp_path):
  eval_dir = _folder(tmp_path, {"square.ndjson": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"})
  assert str(eval_dir / "square.ndjson") in _error_line(_evaluate(trained, eval_dir))


def test_file_that_is_not_an_npz_names_the_file(trained, tmp_path):
  eval_dir = _folder(tmp_path, {"square.npz": "not a zip archive"})
  assert str(eval_dir / "square.npz") in _error_line(_evaluate(trained, eval_dir))
