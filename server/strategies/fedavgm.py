"""FedAvgM: FedAvg with server momentum.

Hsu, Qi, Brown. "Measuring the Effects of Non-Identical Data Distribution for Federated
Visual Classification". 2019. https://arxiv.org/abs/1909.06335

The server keeps a momentum buffer ``m <- beta * m + g`` of the mean pseudo-gradient
``g`` and steps ``w <- w - server_lr * m`` (heavy-ball, as torch.optim.SGD and Flower's
FedAvgM; the first round starts the buffer at ``g``). The buffer is checkpointed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedge.server.strategies.fedavg import Arrays, FedAvg, sgd_step


def momentum_update(momentum: Mapping[str, np.ndarray] | None, gradient: Arrays,
                    beta: float) -> dict[str, np.ndarray]:
    """beta * momentum + gradient (gradient itself when there is no momentum yet)."""
    if not momentum:
        return {n: np.array(g, copy=True) for n, g in gradient.items()}
    return {n: beta * momentum[n] + g for n, g in gradient.items()}


class FedAvgM(FedAvg):
    """FedAvg with heavy-ball momentum on the server.

    server_lr: server step size (default 1.0).
    server_momentum: beta, the momentum factor (default 0.9).
    """

    name = "fedavgm"

    def __init__(self, server_lr: float = 1.0, server_momentum: float = 0.9) -> None:
        super().__init__(server_lr)
        if not 0.0 <= server_momentum < 1.0:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        self.server_momentum = server_momentum
        self.momentum: dict[str, np.ndarray] = {}

    def step(self, weights: Arrays, gradient: Arrays) -> dict[str, np.ndarray]:
        """Updates the momentum buffer with gradient, then steps along it."""
        self.momentum = momentum_update(self.momentum, gradient, self.server_momentum)
        return sgd_step(weights, self.momentum, self.server_lr)

    def state(self) -> dict[str, np.ndarray]:
        """The momentum buffer, as ``momentum/NAME``."""
        return {f"momentum/{n}": a for n, a in self.momentum.items()}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restores the momentum buffer."""
        self.momentum = {n.removeprefix("momentum/"): a for n, a in state.items()
                         if n.startswith("momentum/")}

    def describe(self) -> str:
        """One line for logs."""
        return f"{self.name} (server lr {self.server_lr:g}, momentum {self.server_momentum:g})"
