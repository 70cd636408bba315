"""Krum and Multi-Krum: Byzantine-robust selection of updates.

Blanchard, El Mhamdi, Guerraoui, Stainer. "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent". NeurIPS 2017. https://arxiv.org/abs/1703.02757

With K updates of which at most f are hostile, each update is scored by the sum of its
squared distances to its K - f - 2 nearest neighbours; Krum keeps the lowest-scoring
update, Multi-Krum the m lowest and averages them weighted by example counts (as
Flower's aggregate_krum). The guarantee needs K > 2f + 2. These strategies BUFFER the
round's updates: memory grows with the client count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedge.server.strategies.buffer import Buffered, UpdateBuffer
from fedge.server.strategies.fedavg import weighted_mean
from fedge.server.strategies.spec import Arrays


def pairwise_sq_distances(updates: Sequence[Arrays]) -> np.ndarray:
    """The K x K matrix of squared Euclidean distances between updates (float64)."""
    k = len(updates)
    dist = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            d = sum(float(np.sum(np.square(updates[i][n].astype(np.float64)
                                           - updates[j][n].astype(np.float64))))
                    for n in updates[i])
            dist[i, j] = dist[j, i] = d
    return dist


def krum_scores(updates: Sequence[Arrays], f: int) -> np.ndarray:
    """Each update's sum of squared distances to its K - f - 2 nearest others."""
    dist = pairwise_sq_distances(updates)
    nearest = max(1, len(updates) - f - 2)
    return np.array([np.sort(np.delete(row, i))[:nearest].sum()
                     for i, row in enumerate(dist)])


def krum_select(updates: Sequence[Arrays], f: int, m: int = 1) -> list[int]:
    """Indices of the m lowest-scoring updates (m = 1 is Krum), best first."""
    if not updates:
        raise ValueError("need at least one update")
    if not 1 <= m <= len(updates):
        raise ValueError(f"m must be in 1..{len(updates)}, got {m}")
    return [int(i) for i in np.argsort(krum_scores(updates, f), kind="stable")[:m]]


class Krum(Buffered):
    """Krum: the server steps along the single most central update (buffers updates).

    server_lr: server step size (default 1.0: adopt the chosen client's model).
    byzantine_f: f, the number of hostile clients to tolerate (default 1).
    """

    name = "krum"

    def __init__(self, server_lr: float = 1.0, byzantine_f: int = 1) -> None:
        super().__init__(server_lr)
        if byzantine_f < 0:
            raise ValueError(f"byzantine_f must be >= 0, got {byzantine_f}")
        self.byzantine_f = byzantine_f

    def keep(self, count: int) -> int:
        """How many updates survive selection out of count."""
        return 1

    def aggregate(self, accumulator: UpdateBuffer) -> dict[str, np.ndarray]:
        """The selected update, or the weighted mean of the selected ones."""
        chosen = krum_select(accumulator.updates, self.byzantine_f,
                             self.keep(accumulator.count))
        return weighted_mean([accumulator.updates[i] for i in chosen],
                             [accumulator.weights[i] for i in chosen])

    def describe(self) -> str:
        """One line for logs."""
        return f"{self.name} (f {self.byzantine_f}, server lr {self.server_lr:g})"


class MultiKrum(Krum):
    """Multi-Krum: the example-weighted mean of the K - f best-scoring updates."""

    name = "multikrum"

    def keep(self, count: int) -> int:
        """K - f updates (at least one) survive."""
        return max(1, count - self.byzantine_f)
