"""The accumulator of robust strategies: every pseudo-gradient of the round, in memory.

Median, trimmed mean and Krum need all of a round's updates at once, so memory grows
with the number of clients (K updates of the model's size), unlike FedAvg's fold.
:class:`Buffered` is the shape those strategies share: a buffer as accumulator and a
plain SGD step on whatever their robust aggregate returns.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedge.server.strategies.fedavg import check_server_lr, sgd_step
from fedge.server.strategies.spec import Arrays, Strategy


class UpdateBuffer:
    """The round's pseudo-gradients and their weights, in arrival order."""

    def __init__(self) -> None:
        self.updates: list[Mapping[str, np.ndarray]] = []
        self.weights: list[float] = []
        self.count = 0
        self.total_weight = 0.0

    def add(self, update: Mapping[str, np.ndarray], weight: float) -> None:
        """Keeps update (the caller hands over ownership) with its weight."""
        if weight <= 0:
            raise ValueError("weight must be positive")
        if self.updates and update.keys() != self.updates[0].keys():
            raise ValueError("update's tensor names differ from the first update's")
        self.updates.append(update)
        self.weights.append(weight)
        self.count += 1
        self.total_weight += weight


class Buffered(Strategy[UpdateBuffer]):
    """A strategy that aggregates the round's buffered pseudo-gradients at once and
    steps with SGD; subclasses define :meth:`aggregate`.

    server_lr: server step size (default 1.0: adopt the robust aggregate of the models).
    """

    buffers = True

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = check_server_lr(server_lr)

    def new_accumulator(self) -> UpdateBuffer:
        """A buffer: a robust aggregate needs every update at once."""
        return UpdateBuffer()

    def step(self, weights: Arrays, gradient: Arrays) -> dict[str, np.ndarray]:
        """weights - server_lr * gradient."""
        return sgd_step(weights, gradient, self.server_lr)
