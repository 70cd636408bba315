"""FedOpt: adaptive server optimizers (FedAdam, FedYogi, FedAdagrad) on the mean
pseudo-gradient.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan. "Adaptive Federated
Optimization". ICLR 2021. https://arxiv.org/abs/2003.00295

With ``g`` the round's mean pseudo-gradient (``w_global - w_client`` averaged), the server
keeps ``m <- beta1 * m + (1 - beta1) * g`` and a second moment ``v`` whose update is
what tells the three apart (see fedadam.py, fedyogi.py, fedadagrad.py), and steps
``w <- w - eta * m / (sqrt(v) + tau)``. Flower's implementations write the same rules
with the sign of ``g`` flipped (``delta = -g``); ``m`` flips with it and ``v`` does not,
so the steps agree. Both moments and the step count are checkpointed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedge.server.strategies.fedavg import Arrays, FedAvg


def first_moment(m: np.ndarray, g: np.ndarray, beta1: float) -> np.ndarray:
    """beta1 * m + (1 - beta1) * g."""
    return beta1 * m + (1.0 - beta1) * g


def adaptive_step(w: np.ndarray, m: np.ndarray, v: np.ndarray, eta: float,
                  tau: float) -> np.ndarray:
    """w - eta * m / (sqrt(v) + tau), in w's dtype."""
    return (w - eta * m / (np.sqrt(v) + tau)).astype(w.dtype, copy=False)


class FedOpt(FedAvg):
    """The shared shape of FedAdam, FedYogi and FedAdagrad; subclasses define
    :meth:`second_moment` (and may rescale eta per step).

    server_lr: eta, the server step size.
    beta1, beta2: moment decay rates.
    tau: the adaptivity floor added to sqrt(v).
    """

    name = "fedopt"

    def __init__(self, server_lr: float = 0.1, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-9) -> None:
        super().__init__(server_lr)
        self.beta1, self.beta2, self.tau = beta1, beta2, tau
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.steps = 0

    def second_moment(self, v: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The new second moment from the old one and the pseudo-gradient."""
        raise NotImplementedError

    def step_size(self) -> float:
        """eta for the step about to be taken (self.steps already counts it)."""
        return self.server_lr

    def step(self, weights: Arrays, gradient: Arrays) -> dict[str, np.ndarray]:
        """One adaptive step: update m and v with gradient, then move the weights."""
        self.steps += 1
        eta = self.step_size()
        out = {}
        for name, w in weights.items():
            g = gradient[name].astype(np.float64 if w.dtype.kind != "f" else w.dtype)
            zero = np.zeros_like(g)
            self.m[name] = first_moment(self.m.get(name, zero), g, self.beta1)
            self.v[name] = self.second_moment(self.v.get(name, zero), g)
            if w.dtype.kind != "f":
                new = w.astype(np.float64) - eta * self.m[name] / (np.sqrt(self.v[name])
                                                                    + self.tau)
                out[name] = np.rint(new).astype(w.dtype)
            else:
                out[name] = adaptive_step(w, self.m[name], self.v[name], eta, self.tau)
        return out

    def state(self) -> dict[str, np.ndarray]:
        """``m/NAME``, ``v/NAME`` and the step count."""
        state = {f"m/{n}": a for n, a in self.m.items()}
        state.update({f"v/{n}": a for n, a in self.v.items()})
        state["steps"] = np.array([self.steps], np.int64)
        return state

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restores both moments and the step count."""
        self.m = {n[2:]: a for n, a in state.items() if n.startswith("m/")}
        self.v = {n[2:]: a for n, a in state.items() if n.startswith("v/")}
        self.steps = int(state["steps"][0]) if "steps" in state else 0

    def describe(self) -> str:
        """One line for logs."""
        return (f"{self.name} (eta {self.server_lr:g}, beta1 {self.beta1:g}, "
                f"beta2 {self.beta2:g}, tau {self.tau:g})")
