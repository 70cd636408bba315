"""What a server accepts from a relay (``fedge relay``, fedge.relay) below it.

A relay joins as one device whose update is the example-weighted mean of its own
devices' updates, carrying their summed example count. FedAvg and every strategy that
folds a weighted mean (FedAvgM, FedProx, the FedOpt family) are associative, so a tree of
relays gives the model a flat run gives. The rest are not, and a relay's Join is refused
with one line that says why:

- median, trimmed mean and Krum need each device's update, not a mean of a few;
- central DP clips each update and calibrates its noise to one device's contribution:
  a relay's mean would be clipped as one device (local DP works: devices noise their
  own updates, and a relay passes the request down);
- secure aggregation masks each device's update for this server: a relay could neither
  unmask its devices' updates nor take part as one device (docs/relays.md).
"""

from __future__ import annotations

from typing import Any

from fedge.refusals import Unsupported
from fedge.server.round_state import RoundSettings
from fedge.server.strategies.dp import CentralDP
from fedge.server.strategies.spec import Strategy


def relay_refusal(strategy: Strategy[Any], settings: RoundSettings) -> str:
    """Why this run takes no relay ("" when it does)."""
    if settings.secure:
        return ("this run uses secure aggregation, which does not go through relays: "
                "connect the devices to this server directly")
    if isinstance(strategy, CentralDP):
        return ("this run uses central DP, which clips each device's update; a relay sends "
                "a mean of several: connect the devices directly (or use --dp local)")
    if strategy.buffers:
        return (f"strategy {strategy.name} needs each device's update, and a relay sends "
                "the mean of its devices' updates: connect the devices directly, or use "
                "a mean-based strategy (fedavg, fedavgm, fedprox, fedadam, ...)")
    return ""


def check_relay(relay: bool, strategy: Strategy[Any], settings: RoundSettings) -> None:
    """Refuses (Unsupported) a relay's Join when this run cannot take partial aggregates."""
    if relay and (why := relay_refusal(strategy, settings)):
        raise Unsupported(f"relays are refused: {why}")
