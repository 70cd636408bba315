"""The model-lifecycle settings `fedge server` and `fedge simulate` share, declared once:
federated evaluation on the devices' held-out slices and the gated rollout of edge
artifacts (docs/lifecycle.md)."""

from __future__ import annotations

from dataclasses import dataclass

from fedge.config.settings import setting


@dataclass(frozen=True)
class LifecycleSettings:
    """Federated evaluation (how often, on how many devices, on what share of their data)
    and the canary gate of edge artifacts."""

    eval_every_rounds: int = setting(
        0, "federated evaluation every N rounds, after the last one and of each new edge "
        "artifact: sampled devices measure the global model and their installed edge "
        "model on their held-out slice and the server records the weighted means; 0: off",
        low=0)
    eval_fraction: float = setting(1.0, "share of connected devices each federated "
                                   "evaluation samples", low=0, high=1, low_open=True)
    holdout_fraction: float = setting(
        0.1, "with federated evaluation or canaries: the share of each device's examples "
        "held out of training (chosen by a hash of each example's content)", low=0,
        high=0.9, low_open=True)
    canary_fraction: float = setting(
        0.0, "share of connected devices that get a new edge artifact first and measure it "
        "against their incumbent model on their held-out slice; it reaches the rest only "
        "if within canary_margin; 0: every device at once", low=0, high=1)
    canary_margin: float = setting(
        0.02, "largest drop of held-out accuracy below the incumbent model's that a canary "
        "accepts (it rolls back by itself beyond it, and the artifact is halted)", low=0,
        high=1)
    canary_timeout_s: float = setting(
        300.0, "how long the canaries have to report before the artifact is judged on "
        "those that did (halted if none did)", low=0.1)
