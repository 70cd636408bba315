"""The strategies by name, built from the server's settings."""

from __future__ import annotations

from typing import Any

from fedge.server.strategies.fedadagrad import FedAdagrad
from fedge.server.strategies.fedadam import FedAdam
from fedge.server.strategies.fedavg import FedAvg
from fedge.server.strategies.fedavgm import FedAvgM
from fedge.server.strategies.fedprox import FedProx
from fedge.server.strategies.fedyogi import FedYogi
from fedge.server.strategies.krum import Krum, MultiKrum
from fedge.server.strategies.median import Median
from fedge.server.strategies.spec import Strategy
from fedge.server.strategies.trimmed_mean import TrimmedMean

STRATEGIES: dict[str, type[Strategy[Any]]] = {cls.name: cls for cls in (
    FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad, Median, TrimmedMean, Krum,
    MultiKrum)}


def build_strategy(name: str, server_lr: float | None = None,
                   server_momentum: float | None = None, mu: float | None = None,
                   trim: float | None = None,
                   byzantine_f: int | None = None) -> Strategy[Any]:
    """The named strategy; None leaves a parameter at the strategy's default.

    A new strategy plugs in by implementing fedge.server.strategies.spec.Strategy and
    being listed here (and in fedge.config's names); nothing else changes.

    Settings that do not belong to the strategy are refused by the config checks
    (fedge.config) before this is called.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; use one of {sorted(STRATEGIES)}")
    options: dict[str, float | int] = {}
    if server_lr is not None:
        options["server_lr"] = server_lr
    if server_momentum is not None:
        options["server_momentum"] = server_momentum
    if mu is not None:
        options["mu"] = mu
    if trim is not None:
        options["trim"] = trim
    if byzantine_f is not None:
        options["byzantine_f"] = byzantine_f
    return STRATEGIES[name](**options)
