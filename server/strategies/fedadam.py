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

from server.strategies.fedopt import FedOpt


def adam_second_moment(v: np.ndarray, g: np.ndarray, beta2: float) -> np.ndarray:
    """beta2 * v + (1 - beta2) * g^2."""
    return beta2 * v + (1.0 - beta2) * g * g


class FedAdam(FedOpt):
    """Adam on the server. server_lr (eta) 0.1, beta1 0.9, beta2 0.99, tau 1e-9 by
    default, as Flower's."""

    name = "fedadam"

    def second_moment(self, v: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Adam's exponential average of g^2."""
        return adam_second_moment(v, g, self.beta2)

    def step_size(self) -> float:
        """eta with Adam's bias correction for step self.steps."""
        t = self.steps
        return float(self.server_lr * np.sqrt(1 - self.beta2**t) / (1 - self.beta1**t))
