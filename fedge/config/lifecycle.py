"""The model-lifecycle settings `fedge server` and `fedge simulate` share, declared once:
federated evaluation on the devices' held-out slices (docs/lifecycle.md)."""

from __future__ import annotations

from dataclasses import dataclass

from fedge.config.settings import setting


@dataclass(frozen=True)
class LifecycleSettings:
    """Federated evaluation: how often, on how many devices, on what share of their data."""

    eval_every_rounds: int = setting(
        0, "federated evaluation every N rounds, after the last one and of each new edge "
        "artifact: sampled devices measure the global model and their installed edge "
        "model on their held-out slice and the server records the weighted means; 0: off",
        low=0)
    eval_fraction: float = setting(1.0, "share of connected devices each federated "
                                   "evaluation samples", low=0, high=1, low_open=True)
    holdout_fraction: float = setting(
        0.1, "with federated evaluation: the share of each device's examples held out of "
        "training (chosen by a hash of each example's content)", low=0, high=0.9,
        low_open=True)
