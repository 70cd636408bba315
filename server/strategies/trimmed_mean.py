"""Coordinate-wise trimmed mean: a Byzantine-robust aggregate.

Yin, Chen, Ramchandran, Bartlett. "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates". ICML 2018. https://arxiv.org/abs/1803.01498

For each coordinate, the largest and the smallest ``floor(trim * K)`` of the K values are
dropped and the rest averaged (unweighted, like scipy's trim_mean and Flower's
FedTrimmedAvg). This strategy BUFFERS the round's updates: memory grows with the client
count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedge.server.strategies.buffer import Buffered, UpdateBuffer
from fedge.server.strategies.spec import Arrays


def trimmed_mean(updates: Sequence[Arrays], trim: float) -> dict[str, np.ndarray]:
    """The coordinate-wise mean of updates after cutting floor(trim * K) values at each
    end; trim in [0, 0.5)."""
    if not updates:
        raise ValueError("need at least one update")
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    k = len(updates)
    cut = int(trim * k)
    out = {}
    for name in updates[0]:
        stacked = np.stack([u[name] for u in updates])
        if cut:
            stacked = np.partition(stacked, (cut, k - cut - 1), axis=0)[cut:k - cut]
        out[name] = stacked.mean(axis=0).astype(updates[0][name].dtype, copy=False)
    return out


class TrimmedMean(Buffered):
    """FedAvg with the mean replaced by the coordinate-wise trimmed mean (buffers).

    server_lr: server step size (default 1.0).
    trim: share of values cut at each end of every coordinate (default 0.2).
    """

    name = "trimmed-mean"

    def __init__(self, server_lr: float = 1.0, trim: float = 0.2) -> None:
        super().__init__(server_lr)
        if not 0.0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}")
        self.trim = trim

    def aggregate(self, accumulator: UpdateBuffer) -> dict[str, np.ndarray]:
        """The trimmed mean of the buffered pseudo-gradients."""
        return trimmed_mean(accumulator.updates, self.trim)

    def describe(self) -> str:
        """One line for logs."""
        return f"{self.name} (trim {self.trim:g}, server lr {self.server_lr:g})"
