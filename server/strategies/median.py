"""Coordinate-wise median: a Byzantine-robust aggregate.

Yin, Chen, Ramchandran, Bartlett. "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates". ICML 2018. https://arxiv.org/abs/1803.01498

Each coordinate of the aggregate is the median of that coordinate over the round's
pseudo-gradients (unweighted, as in the paper and Flower's FedMedian). A minority of
hostile clients, however large their updates, cannot drag a coordinate past the honest
ones. This strategy BUFFERS the round's updates: memory grows with the client count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedge.server.strategies.buffer import Buffered, UpdateBuffer
from fedge.server.strategies.spec import Arrays


def coordinate_median(updates: Sequence[Arrays]) -> dict[str, np.ndarray]:
    """The coordinate-wise median of updates, tensor by tensor."""
    if not updates:
        raise ValueError("need at least one update")
    return {name: np.median(np.stack([u[name] for u in updates]), axis=0).astype(
        updates[0][name].dtype, copy=False) for name in updates[0]}


class Median(Buffered):
    """FedAvg with the mean replaced by the coordinate-wise median (buffers updates).

    server_lr: server step size (default 1.0: the median of the client models).
    """

    name = "median"

    def aggregate(self, accumulator: UpdateBuffer) -> dict[str, np.ndarray]:
        """The coordinate-wise median of the buffered pseudo-gradients."""
        return coordinate_median(accumulator.updates)
