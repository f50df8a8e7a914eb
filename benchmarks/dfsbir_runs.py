"""A saved dfsbir train-mode run rebuilt from its workdir, for the diagnosis benchmarks
(`dfsbir_collapse.py`, `dfsbir_student_collapse.py`)."""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import json
import pathlib
from typing import Any

import jax
import ml_collections

from sketchjax.tasks import dfsbir
from sketchjax.tasks import dfsbir_config
from sketchjax.tasks import dfsbir_teachers
from sketchjax.tasks import sbir
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer


@dataclasses.dataclass(frozen=True)
class Run:
  """What the run's training built: its config (saved over today's defaults), teachers and
  their constants, mesh, student networks, objective, a noise batch and the estimator."""

  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  teachers: Any
  constants: Any
  mesh: Any
  students: Any
  objective: Any
  batch: Any
  estimator: Any


def merged(base: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
  """The run's saved config over today's defaults (runs saved before a key existed)."""
  for key, value in saved.items():
    if isinstance(value, dict) and key in base and isinstance(base[key],
                                                              ml_collections.ConfigDict):
      merged(base[key], value)
    else:
      base[key] = value
  return base


def load_run(workdir: pathlib.Path) -> Run:
  config = merged(dfsbir_config.base_config(), json.loads((workdir / "config.json").read_text()))
  split = sbir.load_split(config)
  teachers, constants = dfsbir_teachers.load_teachers(config, split.train.classes)
  mesh = mesh_lib.make_mesh(config.mesh.fsdp)
  students = dfsbir.build_students(config)
  objective = dfsbir.dfl_objective(config, teachers, constants, students, mesh)
  batch = next(dfsbir.NoiseBatches(config.dfl.batch_size))
  estimator = dfsbir._estimator(config, teachers, constants)
  return Run(workdir, config, teachers, constants, mesh, students, objective, batch, estimator)


def checkpoint_states(run: Run) -> Iterator[tuple[int, Any, Any]]:
  """(step, params, model state): step 0 the fresh initialisation, then every checkpoint."""
  yield (0, *run.objective.init(jax.random.key(run.config.seed), run.batch))
  steps = sorted(int(p.name) for p in (run.workdir / "checkpoints").iterdir() if p.name.isdigit())
  for step in steps:
    yield (step, *trainer.restore_params(str(run.workdir), run.objective, run.batch, run.config,
                                         run.mesh, step=step))
