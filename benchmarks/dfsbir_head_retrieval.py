"""Retrieval of a dfsbir run's students through their projection heads (ours,
`students.projection_dim`): the run's own eval uses the students' embeddings
(the heads serve the contrastive loss only); this gives, for each checkpoint,
the same test metrics with each modality's head applied to those embeddings,
beside the embeddings' own.

  python benchmarks/dfsbir_head_retrieval.py --workdirs=workdirs/a,workdirs/b --out=heads.json
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app
from absl import flags
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import dfsbir_runs  # noqa: E402

from sketchjax.methods import crossx_dfl  # noqa: E402
from sketchjax.tasks import sbir  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdirs", [], "dfsbir train-mode workdirs with heads")
_OUT = flags.DEFINE_string("out", "", "JSON file for the rows (printed anyway)")


def main(argv):
  del argv
  rows = []
  for workdir in map(pathlib.Path, _WORKDIRS.value):
    run = dfsbir_runs.load_run(workdir)
    if not run.config.students.projection_dim:
      raise ValueError(f"{workdir}: no projection heads (students.projection_dim = 0)")
    split = sbir.load_split(run.config)
    for step, params, state in dfsbir_runs.checkpoint_states(run):
      variables = {"params": params["students"], **state["students"]}
      embedded = {m: sbir.embed_items(run.students, variables, items, m, run.config, run.mesh)
                  for m, items in (("sketch", split.test.sketches), ("photo", split.test.photos))}
      headed = {m: np.asarray(crossx_dfl.apply_head(params["heads"][m], jnp.asarray(x)))
                for m, x in embedded.items()}
      for name, (query, gallery) in (("students", (embedded["sketch"], embedded["photo"])),
                                     ("heads", (headed["sketch"], headed["photo"]))):
        metrics = sbir.split_metrics(query, gallery, split, run.config, run.mesh)
        rows.append({"workdir": str(workdir), "step": step, "embedding": name,
                     **{k: float(v) for k, v in metrics.items()}})
        print(json.dumps(rows[-1]), flush=True)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  app.run(main)
