"""Hostile clients for simulations: a trainer whose updates are scaled, sign-flipped or
replaced by noise.

Used only by :func:`simulations.runner.simulate` (its ``hostile`` argument) to test
robust strategies; nothing in the client daemon or its configuration can turn it on.
The attack acts on the client's honest step ``d`` (new weights minus global, or its
gradient): ``signflip`` sends ``-factor * d``, ``scale`` sends ``factor * d``, whatever
the update kind, so the server sees the same hostile pseudo-gradient either way;
``noise`` sends Gaussian noise ``factor`` times the size (RMS) of the honest step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedge.client.trainer import Trainer

ATTACKS = ("signflip", "scale", "noise")


@dataclass(frozen=True)
class Attack:
    """How a hostile client distorts its honest step: kind 'signflip', 'scale' or
    'noise'."""

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

    def __init__(self, *args: object, attack: Attack, seed: int = 0, **kwargs: object
                 ) -> None:
        """seed: of the noise attack's draws."""
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.attack = attack
        self._rng = np.random.default_rng(seed)

    def _distort(self, step: np.ndarray) -> np.ndarray:
        """The attack applied to one tensor of the honest step."""
        if self.attack.kind == "noise":
            rms = float(np.sqrt(np.mean(np.square(step, dtype=np.float64)))) or 1e-3
            noise = self._rng.normal(0.0, self.attack.factor * rms, step.shape)
            return noise.astype(step.dtype)
        return (np.float32(self.attack.multiplier) * step).astype(step.dtype)

    def train(self, weights: dict[str, np.ndarray], *args: object, **kwargs: object
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Honest training, then global + attack(new - global)."""
        new, metrics = super().train(weights, *args, **kwargs)  # type: ignore[arg-type]
        return {n: (weights[n] + self._distort(w - weights[n])).astype(w.dtype) for n, w in
                new.items()}, metrics

    def gradient(self, weights: dict[str, np.ndarray], *args: object, **kwargs: object
                 ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The attack applied to the honest gradient."""
        grad, metrics = super().gradient(weights, *args, **kwargs)  # type: ignore[arg-type]
        return {n: self._distort(g) for n, g in grad.items()}, metrics
