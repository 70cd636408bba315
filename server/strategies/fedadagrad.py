"""FedAdagrad: Adagrad as the server optimizer.

Reddi et al. "Adaptive Federated Optimization". ICLR 2021.
https://arxiv.org/abs/2003.00295 (Algorithm 2, FedAdagrad)

``v <- v + g^2`` (the sum of squares so far) and no first-moment decay (beta1 = 0), so
the step is ``w <- w - eta * g / (sqrt(v) + tau)``.
"""

from __future__ import annotations

import numpy as np

from fedge.server.strategies.fedopt import FedOpt


def adagrad_second_moment(v: np.ndarray, g: np.ndarray) -> np.ndarray:
    """v + g^2."""
    return v + g * g


class FedAdagrad(FedOpt):
    """Adagrad on the server.

    server_lr: eta (default 0.01; Flower's 0.1 is too large a first step, as for FedAdam).
    tau: 1e-3 by default, for the reason given in FedAdam (Flower's default is 1e-9).
    """

    name = "fedadagrad"

    def __init__(self, server_lr: float = 0.01, tau: float = 1e-3) -> None:
        super().__init__(server_lr, beta1=0.0, beta2=0.0, tau=tau)

    def second_moment(self, v: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Adagrad's running sum of g^2."""
        return adagrad_second_moment(v, g)
