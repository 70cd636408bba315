"""FedProx: FedAvg whose clients add a proximal term to their local objective.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith. "Federated Optimization in Heterogeneous
Networks". MLSys 2020. https://arxiv.org/abs/1812.06127

Each client minimises ``loss(w) + mu/2 * ||w - w_global||^2`` over its local steps, which
keeps heterogeneous clients from drifting far from the global model. The server side is
FedAvg unchanged; the only difference is ``mu``, which :meth:`FedProx.client_config`
puts in every TRAIN task (``TrainConfig.proximal_mu``) for the client's trainer. It
needs local steps, so it does not combine with gradient updates.
"""

from __future__ import annotations

from fedge.server.strategies.fedavg import FedAvg


class FedProx(FedAvg):
    """FedAvg plus the clients' proximal term.

    server_lr: server step size (default 1.0).
    mu: the proximal coefficient (default 0.01; 0 is plain FedAvg).
    """

    name = "fedprox"

    def __init__(self, server_lr: float = 1.0, mu: float = 0.01) -> None:
        super().__init__(server_lr)
        if mu < 0:
            raise ValueError(f"mu must be >= 0, got {mu}")
        self.mu = mu

    def client_config(self) -> dict[str, float]:
        """The proximal coefficient, for the clients' trainers."""
        return {"proximal_mu": self.mu}

    def describe(self) -> str:
        """One line for logs."""
        return f"{self.name} (mu {self.mu:g}, server lr {self.server_lr:g})"
