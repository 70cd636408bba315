"""What a strategy is: the interface the round driver and the intake rely on.

A round runs the same way whatever the strategy (see fedge.server.intake and
fedge.server.rounds):

1. ``new_accumulator()`` when the round opens;
2. ``accumulator.add(gradient, weight)`` for every accepted update, already turned into a
   pseudo-gradient against the round's global model (``w_global - w_k``, ``-delta`` or
   the gradient as sent), checked and bounded;
3. ``aggregate(accumulator)`` at commit: the round's pseudo-gradient;
4. ``step(weights, gradient)``: the new global model;
5. ``state()`` is checkpointed with the round, ``load_state()`` restores it on resume.

``client_config()`` is what the strategy asks of the devices in each TRAIN task (FedProx's
``proximal_mu``); the gRPC layer copies it into the task without knowing what it means.
A strategy picks its own accumulator type: a running sum (FedAvg), a buffer of updates
(the robust strategies), a masked sum (secure aggregation) or a staleness-weighted
buffer (asynchronous rounds) all plug in here without touching the service.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, Generic, Protocol, TypeVar

import numpy as np

Arrays = Mapping[str, np.ndarray]


class Accumulator(Protocol):
    """What a round collects pseudo-gradients into."""

    count: int  # updates added
    total_weight: float  # sum of their weights (example counts)

    def add(self, update: Arrays, weight: float) -> None:
        """Takes one pseudo-gradient with its weight (the caller hands it over)."""


A = TypeVar("A", bound=Accumulator)


class Strategy(ABC, Generic[A]):
    """A federated strategy over accumulators of type A.

    name: the strategy's name in settings, logs and checkpoints.
    buffers: True when the accumulator keeps every update of a round (memory grows with
        the number of clients); the server logs it.
    server_lr: the server step size.
    """

    name: ClassVar[str] = "strategy"
    buffers: ClassVar[bool] = False
    server_lr: float = 1.0

    @abstractmethod
    def new_accumulator(self) -> A:
        """An empty accumulator for one round's pseudo-gradients."""

    @abstractmethod
    def aggregate(self, accumulator: A) -> dict[str, np.ndarray]:
        """The round's pseudo-gradient from everything accumulated."""

    @abstractmethod
    def step(self, weights: Arrays, gradient: Arrays) -> dict[str, np.ndarray]:
        """The new global weights after one server step along gradient."""

    def client_config(self) -> dict[str, float]:
        """Settings sent to devices with each TRAIN task, named as ``TrainConfig``
        fields (none by default)."""
        return {}

    def state(self) -> dict[str, np.ndarray]:
        """The server optimizer's state, checkpointed with each round (none by default)."""
        return {}

    def load_state(self, state: Arrays) -> None:
        """Restores what state() returned (on a resumed run)."""

    def describe(self) -> str:
        """One line for logs."""
        return f"{self.name} (server lr {self.server_lr:g})"
