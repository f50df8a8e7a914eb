"""The official CrossX-DFL steps in PyTorch, timed: the baseline of dfsbir_steps.py, run
in the same time window as our steps (`dfsbir_steps.py --official_python=...`).

  python benchmarks/official_torch.py --batch=64 --repeats=5     # prints one JSON line

Needs torch and torchvision (not sketchjax's dependencies: `pip install torch torchvision`
in any environment; this file imports nothing of ours). The steps as the official code
runs them (spec 2.2-2.6, random init: the time does not depend on the weights), written
here from the spec, not copied:
  estimator step   two DCGAN generators (latent 1000, width 224, 64x64) fed one noise
                   batch; ResNet-34 photo and sketch teachers (fc -> C classes) and the
                   modality network (fc -> 1) in eval mode; L_G = 3 L_oh + 5 L_ie
                   (log10) + 0.1 L_a + L_modal + L_align [+ L_adv through the ResNet-34
                   students, each teacher's fc as its classifier; the students with their
                   running statistics, as ours (the code's are in train mode most epochs,
                   spec 2.6)]; SGD (momentum 0.9) on
                   the generators. The official code leaves requires_grad on every frozen
                   network, so backward computes their weight gradients too ("frozen
                   networks in backward"); "kept out" is the same step with
                   requires_grad_(False) on them.
  student step     both students (torchvision resnet34, fc removed, train mode) on the
                   64x64 batch with the official input normalisation (statistics of the
                   buffer's thirds, then CIFAR's), L2-normalised; InfoNCE with the two
                   fixed 128-key queues (vanilla.py + moco.py, tau 0.07) or ProxyAnchor
                   with the teacher's fc as proxies (main.py; margin 0.1, alpha 32; the
                   labels given, as in dfsbir_steps.py);
                   SGD (momentum 0.9) on both students.
Threads: torch.set_num_threads(--threads), 2 as the issue's official figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F
import torchvision

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)  # the code's (spec 1.2)


def generator(latent: int = 1000, width: int = 224, channels: int = 3) -> nn.Sequential:
  """The official DCGAN estimator (spec 2.3): [B, latent, 1, 1] -> [B, 3, 64, 64]."""
  layers, c_in = [], latent
  for i, c_out in enumerate((width * 8, width * 4, width * 2, width)):
    layers += [nn.ConvTranspose2d(c_in, c_out, 4, 1 if i == 0 else 2, 0 if i == 0 else 1,
                                  bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    c_in = c_out
  return nn.Sequential(*layers, nn.ConvTranspose2d(c_in, channels, 4, 2, 1, bias=False),
                       nn.Tanh())


def resnet34(outputs: int | None) -> nn.Module:
  """torchvision resnet34 with fc -> Linear(512, outputs), or without fc (None)."""
  model = torchvision.models.resnet34()
  model.fc = nn.Identity() if outputs is None else nn.Linear(512, outputs)
  return model


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
  """(512-d pooled features, fc output) of a torchvision ResNet."""
  body = nn.Sequential(*list(model.children())[:-1])
  features = torch.flatten(body(x), 1)
  return features, model.fc(features)


def official_normalisation(x: torch.Tensor) -> torch.Tensor:
  """pairwise_encoding.py: statistics of the flat buffer's thirds (the bug), then CIFAR's."""
  mean, std = x.reshape(3, -1).mean(1), x.reshape(3, -1).std(1)
  x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
  return (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)


def info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor,
             temperature: float = 0.07) -> torch.Tensor:
  """moco.py: CE([q.k, q.Queue] / tau, 0); queue [D, K]."""
  logits = torch.cat([(query * key).sum(1, keepdim=True), query @ queue], 1) / temperature
  return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long))


def proxy_anchor(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor,
                 margin: float = 0.1, alpha: float = 32.0) -> torch.Tensor:
  """pytorch_metric_learning's ProxyAnchorLoss with its defaults (cosine similarity)."""
  cos = F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).T
  positive = F.one_hot(labels, proxies.shape[0]).float()
  pos = torch.log1p((torch.exp(-alpha * (cos - margin)) * positive).sum(0))
  neg = torch.log1p((torch.exp(alpha * (cos + margin)) * (1 - positive)).sum(0))
  with_positives = (positive.sum(0) > 0).float()
  return (pos * with_positives).sum() / with_positives.sum() + neg.mean()


class Official:
  """The networks, optimisers and queues of one official run at `batch` pairs."""

  def __init__(self, batch: int, classes: int):
    self.generators = [generator().train() for _ in range(2)]
    self.teachers = [resnet34(classes).eval() for _ in range(2)]
    self.modality = resnet34(1).eval()
    self.students = [resnet34(None).train() for _ in range(2)]
    self.g_opt = torch.optim.SGD([p for g in self.generators for p in g.parameters()],
                                 lr=1e-5, momentum=0.9)
    self.s_opt = torch.optim.SGD([p for s in self.students for p in s.parameters()],
                                 lr=1e-5, momentum=0.9)
    self.queues = [F.normalize(torch.randn(512, 128), dim=0) for _ in range(2)]
    self.labels = torch.arange(batch) % classes

  def frozen_in_backward(self, on: bool) -> None:
    """requires_grad of the teachers, modality network and students (official: True)."""
    for net in (*self.teachers, self.modality, *self.students):
      net.requires_grad_(on)

  def estimator_step(self, noise: torch.Tensor, adversarial: bool) -> torch.Tensor:
    images = [g(noise[:, :, None, None]) for g in self.generators]
    loss, logits = 0.0, []
    for teacher, student, x in zip(self.teachers, self.students, images):
      features, logit = features_and_logits(teacher, x)
      labels = logit.argmax(1).detach()
      mean_p = F.softmax(logit, 1).mean(0)
      loss = (loss + 3 * F.cross_entropy(logit, labels)
              + 5 * (mean_p * torch.log10(mean_p)).sum() - 0.1 * features.abs().mean())
      logits.append(logit)
      if adversarial:  # the students with their running statistics, as ours
        loss = loss - F.cross_entropy(teacher.fc(student.eval()(x)), labels)
    modality = [self.modality(x).squeeze(1) for x in images]
    loss = (loss + F.binary_cross_entropy_with_logits(modality[0], torch.zeros_like(modality[0]))
            + F.binary_cross_entropy_with_logits(modality[1], torch.ones_like(modality[1])))
    q = F.softmax(logits[1], 1).detach()
    loss = loss + (q * (torch.log(q) - F.log_softmax(logits[0], 1))).sum(1).mean()
    self.g_opt.zero_grad()
    loss.backward()
    self.g_opt.step()
    return loss

  def student_step(self, photos: torch.Tensor, sketches: torch.Tensor,
                   metric: str) -> torch.Tensor:
    for student in self.students:
      student.train()
    photo, sketch = (F.normalize(s(official_normalisation(x)), dim=1)
                     for s, x in zip(self.students, (photos, sketches)))
    if metric == "info_nce":
      loss = (info_nce(photo, sketch.detach(), self.queues[0])
              + info_nce(sketch, photo.detach(), self.queues[1]))
    else:
      loss = (proxy_anchor(photo, self.labels, self.teachers[0].fc.weight.detach())
              + proxy_anchor(sketch, self.labels, self.teachers[1].fc.weight.detach()))
    self.s_opt.zero_grad()
    loss.backward()
    self.s_opt.step()
    return loss


def peak_gib() -> float:
  """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from
  the parent that started it)."""
  with open("/proc/self/status") as status:
    kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
  return kib / 2**20


def median_seconds(step, repeats: int) -> float:
  """Median wall seconds of step(i) for i = 1..repeats, after step(0) (warm-up)."""
  step(0)
  times = []
  for i in range(1, repeats + 1):
    start = time.perf_counter()
    step(i)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--steps", default="estimator,student",
                      help="comma-separated: estimator, student")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  run = Official(args.batch, args.classes)
  seconds = {}
  noise = lambda i: torch.randn(args.batch, 1000, generator=torch.Generator().manual_seed(i))
  if "estimator" in args.steps:
    for name, adversarial, frozen in (("estimator step (L_adv)", True, True),
                                      ("estimator step (no L_adv)", False, True),
                                      ("estimator step (L_adv, frozen kept out)", True, False),
                                      ("estimator step (no L_adv, frozen kept out)", False, False)):
      run.frozen_in_backward(frozen)
      seconds[name] = median_seconds(lambda i: run.estimator_step(noise(i), adversarial),
                                     args.repeats)
    run.frozen_in_backward(True)
  if "student" in args.steps:
    photos = torch.rand(args.batch, 3, 64, 64) * 2 - 1
    sketches = torch.rand(args.batch, 3, 64, 64) * 2 - 1
    for name, metric in (("student step (InfoNCE)", "info_nce"),
                         ("student step (ProxyAnchor)", "proxy_anchor")):
      seconds[name] = median_seconds(
          lambda i: run.student_step(photos + 1e-3 * i, sketches, metric), args.repeats)
  print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                    "batch": args.batch, "seconds": seconds,
                    "peak_gib": peak_gib()}))


if __name__ == "__main__":
  main()
