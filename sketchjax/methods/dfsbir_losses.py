"""The losses of CrossX-DFL (spec 2.5), as the official code computes them.

Estimator terms (each on one modality's teacher outputs; the estimator loss
sums the photo and the sketch term):
  one_hot_loss        L_oh: cross-entropy of the logits with their own argmax (DAFL);
  class_target_loss   ours: L_oh of class-conditional estimators, cross-entropy
                      with the class each noise vector was assigned;
  info_entropy_loss   L_ie: sum_c p̄_c log10 p̄_c of the batch-mean softmax (the
                      code's log10; minimising it spreads the classes);
  activation_loss     L_a: minus the mean |feature| (DAFL);
  modality_loss       L_modal: BCE-with-logits, photos 0 and sketches 1;
  alignment_loss      L_align: KL(stopgrad(softmax(sketch)) || softmax(photo)),
                      so only the photo branch gets a gradient;
  adversarial_loss    L_adv: minus the cross-entropy of the students'
                      un-normalised features under the teacher's classifier
                      (its weights as proxies) against the teacher's pseudo-labels.
Encoder (student) losses:
  queue_info_nce      InfoNCE of photo->sketch and sketch->photo with negatives
                      from two key queues (`Queues`, MoCo's without momentum
                      encoder); ours, optional: negatives of the query's class
                      dropped (`same_class_negatives`, labelled queues), keys
                      from momentum key encoders (MoCo's), the batch's other
                      pairs as negatives too (in-batch, CLIP / SimCLR's);
                      every same-class key of the batch and the queue a
                      positive (`class_positives`, supervised contrastive);
  proxy_anchor_loss   Proxy Anchor (pytorch-metric-learning's defaults, cosine)
                      with fixed proxies (the teacher's classifier weights).
All take float32 arrays with the batch on axis 0; under `jit` over a global
batch they see every device's rows, so the negatives of InfoNCE and the batch
statistics of L_ie come from the whole batch.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax


def one_hot_loss(logits: jax.Array) -> jax.Array:
  """[B, C] -> mean CE(logits, argmax logits) (the pseudo-label carries no gradient)."""
  labels = jax.lax.stop_gradient(jnp.argmax(logits, axis=-1))
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def class_target_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """[B, C], int [B] -> mean CE(logits, targets) (ours: L_oh with an assigned
  class in place of the argmax; `crossx_dfl.Schedule.conditional_classes`)."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))


def info_entropy_loss(logits: jax.Array) -> jax.Array:
  """[B, C] -> sum_c p̄_c log10 p̄_c, p̄ the batch mean of softmax(logits)
  (minus the entropy in decimal digits; -log10 C at its minimum, uniform p̄)."""
  mean = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
  return jnp.sum(mean * jnp.log10(mean))


def activation_loss(features: jax.Array) -> jax.Array:
  """[B, F] -> -mean |features|."""
  return -jnp.mean(jnp.abs(features))


def modality_loss(photo_logit: jax.Array, sketch_logit: jax.Array) -> jax.Array:
  """[B], [B] modality-network logits -> BCE(photo, 0) + BCE(sketch, 1), batch means."""
  return (jnp.mean(optax.sigmoid_binary_cross_entropy(photo_logit, jnp.zeros_like(photo_logit)))
          + jnp.mean(optax.sigmoid_binary_cross_entropy(sketch_logit,
                                                        jnp.ones_like(sketch_logit))))


def alignment_loss(photo_logits: jax.Array, sketch_logits: jax.Array) -> jax.Array:
  """[B, C], [B, C] -> (1/B) sum_i KL(q_i || softmax(photo_i)), q = stopgrad softmax(sketch)."""
  q = jax.lax.stop_gradient(jax.nn.softmax(sketch_logits, axis=-1))
  log_p = jax.nn.log_softmax(photo_logits, axis=-1)
  return jnp.sum(q * (jnp.log(jnp.maximum(q, 1e-30)) - log_p)) / photo_logits.shape[0]


def adversarial_loss(features: jax.Array, kernel: jax.Array, bias: jax.Array,
                     labels: jax.Array) -> jax.Array:
  """-mean CE(features @ kernel + bias, labels): features [B, F] (the student's,
  un-normalised), kernel [F, C] and bias [C] (the teacher's classifier),
  labels [B] (the teacher's pseudo-labels). Maximising the student's error
  pushes the estimators towards pairs the students have not learnt yet."""
  logits = features @ kernel + bias
  return -jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def unit_rows(x: jax.Array, axis: int = -1) -> jax.Array:
  """x over its L2 norm along `axis` (x * rsqrt(|x|^2 + 1e-12)): the normalisation of
  every DFL embedding, key and proxy."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + 1e-12)


@flax.struct.dataclass
class Queues:
  """Negative keys for InfoNCE: `sketch_keys` [K, D] (negatives of photo
  queries), `photo_keys` [K, D], and `position` (int32 [], the next slot).

  Ours, for `same_class_negatives`: `sketch_labels`, `photo_labels` (int32 [K])
  the teacher's class of each key (the sketch teacher's for sketch keys, the
  photo teacher's for photo keys), -1 for the initial random keys; None (no
  leaves: the official queues' pytree) when the queues are unlabelled.
  """

  sketch_keys: jax.Array
  photo_keys: jax.Array
  position: jax.Array
  sketch_labels: jax.Array | None = None
  photo_labels: jax.Array | None = None

  @property
  def labelled(self) -> bool:
    return self.sketch_labels is not None

  @classmethod
  def random(cls, rng: jax.Array, size: int, dim: int, labelled: bool = False) -> "Queues":
    """Unit Gaussian keys, as the official queues start; labelled=True (ours)
    adds labels -1 (no class) for them."""
    a, b = jax.random.split(rng)
    labels = jnp.full((size,), -1, jnp.int32) if labelled else None
    return cls(unit_rows(jax.random.normal(a, (size, dim))), unit_rows(jax.random.normal(b, (size, dim))),
               jnp.zeros((), jnp.int32), labels, labels)

  def push(self, sketch: jax.Array, photo: jax.Array, *, official: bool = False,
           sketch_labels: jax.Array | None = None,
           photo_labels: jax.Array | None = None) -> "Queues":
    """The queues with the batch's keys [B, D] written at `position` (a ring;
    for B > K the last K rows). official=True reproduces MoCo's
    `_dequeue_and_enqueue` of the DF-SBIR code: nothing happens unless K % B == 0
    (at the code's B = 512, K = 128: never, so the negatives stay random).
    Labelled queues (ours) need the keys' labels (int [B] each) and write them
    at the same slots; unlabelled queues refuse them."""
    if (sketch_labels is not None, photo_labels is not None) != (self.labelled,) * 2:
      raise ValueError("labelled queues need both sketch_labels and photo_labels, unlabelled "
                       f"queues take neither (these are labelled={self.labelled})")
    size, batch = self.sketch_keys.shape[0], sketch.shape[0]
    if official and size % batch:
      return self
    rows = min(batch, size)
    slots = (self.position + jnp.arange(rows)) % size
    write = lambda queue, keys: queue.at[slots].set(jax.lax.stop_gradient(keys[-rows:]))
    labels = {}
    if self.labelled:
      labels = {"sketch_labels": write(self.sketch_labels, sketch_labels.astype(jnp.int32)),
                "photo_labels": write(self.photo_labels, photo_labels.astype(jnp.int32))}
    return Queues(write(self.sketch_keys, sketch), write(self.photo_keys, photo),
                  (self.position + rows) % size, **labels)


def same_class_negatives(queues: Queues, photo_labels: jax.Array, sketch_labels: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
  """Ours: which queue keys are of the pair's own class (bool [B, K] each).

  Photo query i (negatives: sketch keys) -> sketch keys with sketch label ==
  sketch_labels[i]; sketch query i (negatives: photo keys) -> photo keys with
  photo label == photo_labels[i]: each compared in its key's teacher's classes,
  the query's partner's label. Keys labelled -1 (the initial random ones) are
  never of a class. photo_labels, sketch_labels: int [B], the pairs' teacher labels.
  """
  if not queues.labelled:
    raise ValueError("same-class negatives need labelled queues (Queues.random(labelled=True))")
  same = lambda labels, keys: (labels[:, None] == keys[None, :]) & (keys[None, :] >= 0)
  return same(sketch_labels, queues.sketch_labels), same(photo_labels, queues.photo_labels)


def queue_info_nce(photo: jax.Array, sketch: jax.Array, queues: Queues,
                   temperature: float = 0.07, *, photo_labels: jax.Array | None = None,
                   sketch_labels: jax.Array | None = None,
                   photo_keys: jax.Array | None = None, sketch_keys: jax.Array | None = None,
                   in_batch_negatives: bool = False, class_positives: bool = False) -> jax.Array:
  """CE([u_p . sg(k_s), u_p . Q_s] / T, 0) + CE([u_s . sg(k_p), u_s . Q_p] / T, 0),
  batch means; photo, sketch [B, D] unit embeddings of the pairs (row i of
  both from the same noise), queues of [K, D] keys. The positive key carries
  no gradient (the code's `k.detach()`); the paper's keys are the other
  modality's embeddings, k_s = u_s and k_p = u_p.

  Ours, each optional (off: the paper's loss, the same operations):
    photo_labels, sketch_labels (int [B] each, both or neither; labelled
      queues): the negatives of the query's class (`same_class_negatives`,
      and with in-batch negatives the batch's keys of its class) leave the
      softmax's denominator; a row whose negatives are all dropped has loss 0
      (only the positive left) and no gradient.
    photo_keys, sketch_keys ([B, D] unit, both or neither): the pairs' keys
      k_p, k_s from momentum key encoders (MoCo's fix for keys from a moving
      encoder); positives and in-batch negatives, never differentiated.
    in_batch_negatives: the other pairs' keys of the batch are negatives as
      well as the queue's (photo query i against k_s of every j != i, sketch
      query i against k_p of every j != i; CLIP / SimCLR's negatives, which
      are computed by the current encoders, unlike the queue's older keys).
    class_positives (needs the labels and labelled queues): supervised
      contrastive (Khosla et al. 2020, their L_out, on the teachers' labels):
      the keys of the query's class (its partner's label, compared as
      `same_class_negatives` does) are positives instead of being negatives
      or dropped: the queue's, and the batch's other pairs' keys j != i of that
      class (these join the softmax whether or not `in_batch_negatives`; the
      batch's other-class keys are negatives only with `in_batch_negatives`).
      A row's loss is the mean over its positives P(i) (its own pair's key
      always one) of -log softmax over positives and negatives; with no
      same-class key anywhere it is the InfoNCE row above.
  """
  if (photo_labels is None) != (sketch_labels is None):
    raise ValueError("give both photo_labels and sketch_labels, or neither")
  if (photo_keys is None) != (sketch_keys is None):
    raise ValueError("give both photo_keys and sketch_keys, or neither")
  if class_positives:
    if photo_labels is None:
      raise ValueError("class_positives needs photo_labels and sketch_labels (and labelled "
                       "queues)")
    return _class_positive_info_nce(photo, sketch, queues, temperature, photo_labels,
                                    sketch_labels, photo_keys, sketch_keys, in_batch_negatives)
  labelled = photo_labels is not None
  masks = (None, None) if not labelled else same_class_negatives(queues, photo_labels,
                                                                 sketch_labels)
  batch_keep = (None, None)
  if in_batch_negatives:  # [B, B]: which of the batch's keys are a row's negatives
    others = ~jnp.eye(photo.shape[0], dtype=bool)
    own_class = lambda labels: labels[:, None] == labels[None, :]
    batch_keep = ((others & ~own_class(sketch_labels), others & ~own_class(photo_labels))
                  if labelled else (others, others))

  def one_way(query: jax.Array, key: jax.Array, negatives: jax.Array,
              masked: jax.Array | None, in_batch: jax.Array | None) -> jax.Array:
    key = jax.lax.stop_gradient(key)
    positive = jnp.sum(query * key, axis=-1, keepdims=True)
    labels = jnp.zeros(query.shape[0], jnp.int32)
    if in_batch is None:
      logits = jnp.concatenate([positive, query @ negatives.T], axis=-1) / temperature
      if masked is None:
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
      keep = jnp.concatenate([jnp.ones_like(masked[:, :1]), ~masked], axis=-1)  # positive stays
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels, where=keep))
    logits = jnp.concatenate([positive, query @ negatives.T, query @ key.T], axis=-1) / temperature
    queue_keep = jnp.ones(negatives.shape[:1], bool)[None, :] if masked is None else ~masked
    keep = jnp.concatenate([jnp.ones_like(in_batch[:, :1]),
                            jnp.broadcast_to(queue_keep, (query.shape[0], negatives.shape[0])),
                            in_batch], axis=-1)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels, where=keep))

  return (one_way(photo, sketch if sketch_keys is None else sketch_keys, queues.sketch_keys,
                  masks[0], batch_keep[0]) +
          one_way(sketch, photo if photo_keys is None else photo_keys, queues.photo_keys,
                  masks[1], batch_keep[1]))


def _class_positive_info_nce(photo: jax.Array, sketch: jax.Array, queues: Queues,
                             temperature: float, photo_labels: jax.Array,
                             sketch_labels: jax.Array, photo_keys: jax.Array | None,
                             sketch_keys: jax.Array | None, in_batch_negatives: bool
                             ) -> jax.Array:
  """`queue_info_nce(class_positives=True)`: both directions, batch means."""
  queue_same = same_class_negatives(queues, photo_labels, sketch_labels)
  others = ~jnp.eye(photo.shape[0], dtype=bool)
  own_class = lambda labels: labels[:, None] == labels[None, :]

  def one_way(query, key, negatives, queue_positive, labels):
    key = jax.lax.stop_gradient(key)
    positive = jnp.sum(query * key, axis=-1, keepdims=True)
    logits = jnp.concatenate([positive, query @ negatives.T, query @ key.T], axis=-1) / temperature
    batch_positive = others & own_class(labels)
    batch_keep = others if in_batch_negatives else batch_positive
    first = jnp.ones_like(batch_positive[:, :1])
    keep = jnp.concatenate([first, jnp.ones_like(queue_positive), batch_keep], axis=-1)
    positives = jnp.concatenate([first, queue_positive, batch_positive], axis=-1)
    log_prob = logits - jax.nn.logsumexp(logits, axis=-1, where=keep, keepdims=True)
    rows = -jnp.sum(jnp.where(positives, log_prob, 0.0), -1) / jnp.sum(positives, -1)
    return jnp.mean(rows)

  return (one_way(photo, sketch if sketch_keys is None else sketch_keys, queues.sketch_keys,
                  queue_same[0], sketch_labels) +
          one_way(sketch, photo if photo_keys is None else photo_keys, queues.photo_keys,
                  queue_same[1], photo_labels))


def class_positive_counts(queues: Queues, photo_labels: jax.Array, sketch_labels: jax.Array
                          ) -> jax.Array:
  """Ours, logged with `class_positives`: the mean number of positives a query
  has (its own pair's key, the queue's and the batch's other keys of its
  class), over both directions."""
  queue_same = same_class_negatives(queues, photo_labels, sketch_labels)
  others = ~jnp.eye(photo_labels.shape[0], dtype=bool)
  count = lambda queue, labels: jnp.mean(
      1 + jnp.sum(queue, -1) + jnp.sum(others & (labels[:, None] == labels[None, :]), -1))
  return (count(queue_same[0], sketch_labels) + count(queue_same[1], photo_labels)) / 2


def proxy_anchor_loss(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array,
                      margin: float = 0.1, alpha: float = 32.0) -> jax.Array:
  """Proxy Anchor on cosine similarity (pytorch-metric-learning's ProxyAnchorLoss).

  embeddings [B, D], labels [B] int, proxies [C, D] (normalised here):
    (1/|P+|) sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x,p) - margin)))
    + (1/C) sum_p log(1 + sum_{x in X_p-} exp(alpha (s(x,p) + margin)))
  with P+ the proxies with a positive in the batch.
  """
  sim = unit_rows(embeddings) @ unit_rows(proxies).T  # [B, C]
  positive = jax.nn.one_hot(labels, proxies.shape[0], dtype=bool)
  # log(1 + sum exp(z)) over the masked rows = logsumexp over them and a 0.
  def log1p_sum_exp(z, mask):
    z = jnp.where(mask, z, -jnp.inf)
    return jnp.logaddexp(0.0, jax.nn.logsumexp(z, axis=0, where=mask))
  pos = jnp.where(positive.any(0), log1p_sum_exp(-alpha * (sim - margin), positive), 0.0)
  neg = log1p_sum_exp(alpha * (sim + margin), ~positive)
  with_positives = jnp.maximum(jnp.sum(positive.any(0)), 1)
  return jnp.sum(pos) / with_positives + jnp.mean(neg)
