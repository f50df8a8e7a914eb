"""SketchXAINet through the trainer on 8 simulated devices: FSDP and micro-batches
change where and in how many pieces the work is done, not the losses."""

import json

import jax
import pytest

from sketchjax.data import pipeline, procedural
from sketchjax.tasks import classify, classify_config
from sketchjax.training import mesh as mesh_lib
from sketchjax.training import trainer


def _losses(tmp_path, name, *, fsdp=1, microbatches=1):
  config = classify_config.smoke(classify_config.base_config())
  config.model.dropout = config.model.attention_dropout = 0.0  # masks follow the layout
  config.train.num_steps, config.train.log_every = 3, 1
  config.train.eval_every = config.train.checkpoint_every = 3
  config.train.microbatches = microbatches
  config.mesh.fsdp = fsdp
  source = procedural.ProceduralSource(64)
  model = classify.build_model(config.model, source.num_classes)
  tokenizer = classify.tokenizer_config(config)
  train_iter = pipeline.train_iterator(source, global_batch_size=16, seed=0, tokenizer=tokenizer)
  workdir = tmp_path / name
  trainer.train_and_evaluate(config, str(workdir), classify.classification_objective(model),
                             train_iter, None,
                             mesh=mesh_lib.make_mesh(fsdp))
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r["loss"] for r in rows if r.get("split") == "train"]


def test_fsdp_and_microbatches_give_the_losses_of_plain_data_parallelism(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  plain = _losses(tmp_path, "plain")
  assert len(plain) == 3
  assert _losses(tmp_path, "fsdp", fsdp=2) == pytest.approx(plain, rel=1e-4)
  micro = _losses(tmp_path, "micro", microbatches=2)
  assert micro == pytest.approx(plain, rel=1e-4)
