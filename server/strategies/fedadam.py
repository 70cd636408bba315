"""FedAdam: Adam as the server optimizer.

Reddi et al. "Adaptive Federated Optimization". ICLR 2021.
https://arxiv.org/abs/2003.00295 (Algorithm 2, FedAdam)

``v <- beta2 * v + (1 - beta2) * g^2``, with Adam's bias correction of the step size
(Kingma & Ba 2015), as Flower's FedAdam applies it: ``eta_t = eta * sqrt(1 - beta2^t) /
(1 - beta1^t)`` at the t-th server step. (Flower counts t from its round number plus one;
we count server steps from 1.)
"""

from __future__ import annotations

import numpy as np

from fedge.server.strategies.fedopt import FedOpt


def adam_second_moment(v: np.ndarray, g: np.ndarray, beta2: float) -> np.ndarray:
    """beta2 * v + (1 - beta2) * g^2."""
    return beta2 * v + (1.0 - beta2) * g * g


class FedAdam(FedOpt):
    """Adam on the server.

    server_lr: eta (default 0.01; Flower's 0.1 moves every weight by about 0.1 on the
        first step, which wrecks a freshly initialised model's loss).
    beta1, beta2: 0.9 and 0.99 by default, as Flower's.
    tau: 1e-3 by default: how adaptive the step is. A coordinate whose pseudo-gradient
        is far below tau moves by about eta * m / tau instead of a full eta; with
        Flower's 1e-9 every coordinate that changed at all moves by about eta on the first
        step (sign descent). Reddi et al. tune tau as a hyperparameter; Flower's FedYogi
        also defaults to 1e-3. (tau is no longer needed against float noise: updates are
        folded as differences against the global model, so a coordinate no client
        changed has a pseudo-gradient of exactly 0 and does not move, whatever tau.)
    """

    name = "fedadam"

    def __init__(self, server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-3) -> None:
        super().__init__(server_lr, beta1, beta2, tau)

    def second_moment(self, v: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Adam's exponential average of g^2."""
        return adam_second_moment(v, g, self.beta2)

    def step_size(self) -> float:
        """eta with Adam's bias correction for step self.steps."""
        t = self.steps
        return float(self.server_lr * np.sqrt(1 - self.beta2**t) / (1 - self.beta1**t))
