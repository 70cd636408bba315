"""Local training with torch: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from fedge.tasks import Task
from fedge.tasks.training import load_weights, weights_of

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """"auto" is the first CUDA device when torch sees one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


class Trainer:
    """Holds one model and the device's data on the chosen device; trains on request."""

    def __init__(self, task: Task, x: np.ndarray, y: np.ndarray, device: str = "auto") -> None:
        self.task = task
        self.device = pick_device(device)
        self.model = task.build_model().to(self.device)
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        self.y = torch.from_numpy(np.ascontiguousarray(y)).to(self.device)

    @property
    def num_examples(self) -> int:
        return len(self.x)

    def set_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """Replaces the local examples (after a rescan found the data changed)."""
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        self.y = torch.from_numpy(np.ascontiguousarray(y)).to(self.device)

    def train(self, weights: dict[str, np.ndarray], epochs: int, lr: float, batch_size: int,
              seed: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Trains from weights for some epochs of SGD; returns new weights and metrics."""
        load_weights(self.model, weights)
        self.model.train()
        optimizer = torch.optim.SGD(self.model.parameters(), lr=lr,
                                    momentum=self.task.defaults.momentum)
        generator = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        losses: list[float] = []
        # Near-equal batches of at most batch_size: a runt last batch (one example of
        # 225 at batch 32) takes a wild step that momentum then amplifies.
        num_batches = max(1, -(-len(self.x) // batch_size))
        for _ in range(epochs):
            order = torch.randperm(len(self.x), generator=generator).to(self.device)
            for batch in torch.tensor_split(order, num_batches):
                losses.append(self.task.train_step(self.model, self.x[batch], self.y[batch],
                                                   optimizer))
        metrics = {"train_loss": float(np.mean(losses)) if losses else 0.0,
                   "train_seconds": time.perf_counter() - started}
        return weights_of(self.model), metrics
