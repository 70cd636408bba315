"""Hostile clients for simulations: a trainer whose updates are scaled or sign-flipped.

Used only by :func:`simulations.runner.simulate` (its ``hostile`` argument) to test
robust strategies; nothing in the client daemon or its configuration can turn it on.
The attack acts on the client's honest step ``d`` (new weights minus global, or its
gradient): ``signflip`` sends ``-factor * d``, ``scale`` sends ``factor * d``, whatever
the update kind, so the server sees the same hostile pseudo-gradient either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from client.trainer import Trainer

ATTACKS = ("signflip", "scale")


@dataclass(frozen=True)
class Attack:
    """How a hostile client distorts its honest step: kind 'signflip' or 'scale'."""

    kind: str = "signflip"
    factor: float = 4.0

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.kind!r}")

    @property
    def multiplier(self) -> float:
        """What the honest step is multiplied by."""
        return -self.factor if self.kind == "signflip" else self.factor


class HostileTrainer(Trainer):
    """A Trainer whose results are distorted by an Attack."""

    def __init__(self, *args: object, attack: Attack, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.attack = attack

    def train(self, weights: dict[str, np.ndarray], *args: object, **kwargs: object
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Honest training, then global + multiplier * (new - global)."""
        new, metrics = super().train(weights, *args, **kwargs)  # type: ignore[arg-type]
        k = np.float32(self.attack.multiplier)
        return {n: (weights[n] + k * (w - weights[n])).astype(w.dtype) for n, w in
                new.items()}, metrics

    def gradient(self, weights: dict[str, np.ndarray], *args: object, **kwargs: object
                 ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The honest gradient times the multiplier."""
        grad, metrics = super().gradient(weights, *args, **kwargs)  # type: ignore[arg-type]
        k = np.float32(self.attack.multiplier)
        return {n: (k * g).astype(g.dtype) for n, g in grad.items()}, metrics
