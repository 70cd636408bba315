"""FedYogi: Yogi as the server optimizer.

Reddi et al. "Adaptive Federated Optimization". ICLR 2021.
https://arxiv.org/abs/2003.00295 (Algorithm 2, FedYogi); Zaheer et al. "Adaptive
Methods for Nonconvex Optimization". NeurIPS 2018.

``v <- v - (1 - beta2) * g^2 * sign(v - g^2)``: the second moment moves toward ``g^2``
additively, so it grows slowly and a burst of large updates does not crush the step.
"""

from __future__ import annotations

import numpy as np

from fedge.server.strategies.fedopt import FedOpt


def yogi_second_moment(v: np.ndarray, g: np.ndarray, beta2: float) -> np.ndarray:
    """v - (1 - beta2) * g^2 * sign(v - g^2)."""
    g2 = g * g
    return v - (1.0 - beta2) * g2 * np.sign(v - g2)


class FedYogi(FedOpt):
    """Yogi on the server. server_lr (eta) 0.01, beta1 0.9, beta2 0.99, tau 1e-3 by
    default, as Flower's."""

    name = "fedyogi"

    def __init__(self, server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-3) -> None:
        super().__init__(server_lr, beta1, beta2, tau)

    def second_moment(self, v: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Yogi's additive update of v."""
        return yogi_second_moment(v, g, self.beta2)
