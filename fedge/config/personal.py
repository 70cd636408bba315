"""The personalization settings, declared once and shared by ``fedge client`` and
``fedge simulate`` (client/personalize.py does the work)."""

from __future__ import annotations

from dataclasses import dataclass

from fedge.config.settings import setting

PERSONALIZE = ("head", "full")


@dataclass(frozen=True)
class Personalization:
    """After the last round, each device fine-tunes the final model on its own data."""

    personalize_epochs: int = setting(0, "after the last round, fine-tune the final model "
                                      "on the device's data for this many epochs and "
                                      "report held-out accuracy personalized vs global "
                                      "(the weights stay on the device); 0: off", low=0)
    personalize: str = setting("head", "what personalization trains: head (the last "
                               "layer, FedPer-style) or full (the whole model)",
                               choices=PERSONALIZE)
