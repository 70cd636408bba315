"""The default train and eval steps for classification, and whole-set evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from fedge.tasks import Task


def classification_train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer
) -> float:
    """One SGD step of cross-entropy on a batch; returns the batch's mean loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return float(loss.item())


@torch.no_grad()
def classification_eval_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, int]:
    """Returns (summed cross-entropy, number of correct predictions) on a batch."""
    logits = model(x)
    loss = F.cross_entropy(logits, y, reduction="sum")
    return float(loss.item()), int((logits.argmax(dim=1) == y).sum().item())


def evaluate(
    task: Task,
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean loss and accuracy of model on (x, y)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size]).to(device)
        yb = torch.from_numpy(y[start : start + batch_size]).to(device)
        loss, right = task.eval_step(model, xb, yb)
        total_loss += loss
        correct += right
    n = max(len(x), 1)
    return {"loss": total_loss / n, "accuracy": correct / n}


def weights_of(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state as named numpy arrays (copies, on the CPU)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_weights(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Loads named numpy arrays into the model, strictly (names and shapes must match)."""
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    model.load_state_dict(state, strict=True)
