"""Knowledge distillation: train a small student to match a teacher's softened outputs.

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015): the
loss is alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) plus
(1 - alpha) * cross-entropy on the examples that carry a label. Unlabelled examples
(label -1) still teach through the teacher's soft targets, which is what makes a small,
mostly unlabelled proxy set enough.

:func:`distill` takes any iterable of batches, so the same loop serves the server's
proxy set today (:func:`proxy_batches`) and a device's own data in a federated
distillation later. Without a teacher it is plain supervised training on the labelled
examples, the baseline distillation is measured against.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

UNLABELLED = -1
Batch = tuple[np.ndarray, np.ndarray]  # inputs, labels (UNLABELLED where unknown)


@dataclass(frozen=True)
class DistillSettings:
    """How a student is distilled.

    temperature: softens both models' outputs (T above).
    alpha: weight of the soft-target term; 1 - alpha weighs the labelled cross-entropy.
    steps, batch_size, lr: Adam steps, examples per step and learning rate.
    mixup: share of each batch made of mixed pairs of inputs (unlabelled; the teacher
        labels them), which widens a small proxy set. 0 turns it off.
    seed: seeds batch sampling, mixing and the student's optimiser.
    """

    temperature: float = 4.0
    alpha: float = 0.7
    steps: int = 600
    batch_size: int = 128
    lr: float = 0.01
    mixup: float = 0.5
    seed: int = 0


def proxy_batches(x: np.ndarray, y: np.ndarray | None, settings: DistillSettings
                  ) -> Iterator[Batch]:
    """settings.steps batches drawn from a (possibly unlabelled) proxy set, part of each
    batch being mixup pairs of proxy inputs."""
    rng = np.random.default_rng(settings.seed)
    labels = (np.full(len(x), UNLABELLED, dtype=np.int64) if y is None
              else np.asarray(y, dtype=np.int64))
    mixed = round(settings.batch_size * settings.mixup)
    plain = settings.batch_size - mixed
    for _ in range(settings.steps):
        idx = rng.integers(0, len(x), size=plain)
        xb, yb = x[idx], labels[idx]
        if mixed:
            a, b = rng.integers(0, len(x), size=(2, mixed))
            lam = rng.uniform(0.0, 1.0, size=(mixed,) + (1,) * (x.ndim - 1))
            xm = (lam * x[a] + (1.0 - lam) * x[b]).astype(x.dtype)
            xb = np.concatenate([xb, xm])
            yb = np.concatenate([yb, np.full(mixed, UNLABELLED, dtype=np.int64)])
        yield xb, yb


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                 y: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """The soft-target loss of one batch (see the module docstring)."""
    labelled = y != UNLABELLED
    hard = (F.cross_entropy(student_logits[labelled], y[labelled]) if bool(labelled.any())
            else student_logits.sum() * 0.0)
    if teacher_logits is None:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1),
                    F.log_softmax(teacher_logits / t, dim=1),
                    log_target=True, reduction="batchmean") * (t * t)
    return alpha * soft + (1.0 - alpha) * hard


def distill(teacher: nn.Module | None, student: nn.Module, batches: Iterable[Batch],
            settings: DistillSettings) -> dict[str, float]:
    """Trains student in place on batches; returns the mean loss and the step count.

    teacher None trains on the labelled examples alone (the from-scratch baseline).
    """
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.lr)
    if teacher is not None:
        teacher.eval()
    student.train()
    losses: list[float] = []
    for xb, yb in batches:
        x = torch.from_numpy(np.ascontiguousarray(xb))
        y = torch.from_numpy(np.ascontiguousarray(yb))
        if teacher is None and not bool((y != UNLABELLED).any()):
            continue  # nothing to learn from without a teacher; the step still counts
        with torch.no_grad():
            teacher_logits = teacher(x) if teacher is not None else None
        loss = distill_loss(student(x), teacher_logits, y, settings.temperature,
                            settings.alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    student.eval()
    log.debug("distilled for %d steps, final loss %.4f", len(losses),
              losses[-1] if losses else float("nan"))
    return {"loss": float(np.mean(losses)) if losses else float("nan"),
            "steps": float(len(losses))}
