"""grain pipelines: determinism, resumable position, eval padding."""

import numpy as np

from sketchjax.data import pipeline, procedural, tokenize

TOKENIZER = tokenize.TokenizerConfig(stroke_buckets=(16, 32, 196))


def _batches(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_train_batches_are_seeded_and_resume_from_state():
  source = procedural.ProceduralSource(40)
  it = pipeline.train_iterator(source, global_batch_size=8, seed=1, tokenizer=TOKENIZER)
  first = _batches(it, 3)
  state = it.get_state()
  rest = _batches(it, 4)  # crosses the epoch boundary at 5 batches
  again = pipeline.train_iterator(source, global_batch_size=8, seed=1, tokenizer=TOKENIZER)
  np.testing.assert_array_equal(_batches(again, 3)[0]["label"], first[0]["label"])
  resumed = pipeline.train_iterator(source, global_batch_size=8, seed=1, tokenizer=TOKENIZER)
  resumed.set_state(state)
  for a, b in zip(rest, _batches(resumed, 4)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = pipeline.train_iterator(source, global_batch_size=8, seed=2, tokenizer=TOKENIZER)
  assert not np.array_equal(next(other)["label"], first[0]["label"])


def test_eval_batches_cover_the_source_once_with_padding_weighted_zero():
  source = procedural.ProceduralSource(19)
  batches = list(pipeline.eval_batches(source, global_batch_size=8, tokenizer=TOKENIZER))
  assert len(batches) == 3
  weights = np.concatenate([b["weight"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(weights, [1.0] * 19 + [0.0] * 5)
  np.testing.assert_array_equal(labels[:19], [source[i]["label"] for i in range(19)])


def test_decode_normalises_and_zero_weights_degenerate_sketches():
  example = pipeline.decode({"stroke3": np.array([[10, 10, 0], [100, 0, 1]]), "label": 2})
  np.testing.assert_allclose(example.sketch.points()[:, 0], [-0.74, 0.74])
  assert (example.label, example.weight) == (2, 1.0)
  dot = pipeline.decode({"stroke3": np.array([[5, 5, 1]]), "label": 1})
  assert dot.weight == 0.0 and dot.sketch.num_strokes == 1


def test_augmentation_changes_training_sketches_deterministically():
  source = procedural.ProceduralSource(16)
  aug = pipeline.Augmentation(affine=True, stroke_dropout=0.2)
  a = next(pipeline.train_iterator(source, global_batch_size=8, seed=0, tokenizer=TOKENIZER,
                                   augmentation=aug))
  b = next(pipeline.train_iterator(source, global_batch_size=8, seed=0, tokenizer=TOKENIZER,
                                   augmentation=aug))
  plain = next(pipeline.train_iterator(source, global_batch_size=8, seed=0, tokenizer=TOKENIZER))
  np.testing.assert_array_equal(a["loc"], b["loc"])
  assert not np.array_equal(a["loc"], plain["loc"])
