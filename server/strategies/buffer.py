"""The accumulator of robust strategies: every update of the round, kept in memory.

Median, trimmed mean and Krum need all of a round's updates at once, so memory grows
with the number of clients (K updates of the model's size), unlike FedAvg's fold.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class UpdateBuffer:
    """The round's updates and their weights, in arrival order."""

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
