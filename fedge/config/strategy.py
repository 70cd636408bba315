"""The settings `fedge server` and `fedge simulate` share: local training, and the
strategy with the kind and encoding of updates, declared once for both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedge.config.settings import setting
from fedge.errors import ConfigError
from fedge.wire import ENCODING_NAMES, UPDATE_KIND_NAMES

STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "median",
              "trimmed-mean", "krum", "multikrum")
UPDATES = UPDATE_KIND_NAMES
ENCODINGS = ENCODING_NAMES
# The strategy settings that only some strategies take, and which ones.
_OWNERS = {"server_momentum": ("fedavgm",), "mu": ("fedprox",), "trim": ("trimmed-mean",),
           "byzantine_f": ("krum", "multikrum")}
STRATEGY = "strategy"  # the docs group of the strategy settings
# Strategies that need each update in the clear (they buffer a round's updates).
BUFFERING = ("median", "trimmed-mean", "krum", "multikrum")


@dataclass(frozen=True)
class LocalTraining:
    """The local training settings the server hands out with each task; 0 (None for
    momentum, where 0 is a value) means the task's default."""

    epochs: int = setting(0, "local epochs", shown="0 = the task's", low=0)
    lr: float = setting(0.0, "local learning rate", shown="0 = the task's", low=0)
    batch_size: int = setting(0, "local batch size", shown="0 = the task's", low=0)
    momentum: float | None = setting(None, "local SGD momentum (0: plain SGD, as many "
                                     "papers' FedAvg)", shown="the task's", low=0, high=1,
                                     high_open=True)


@dataclass(frozen=True)
class StrategySettings:
    """The aggregation strategy, what clients send and how it travels (README
    "Strategies"); None means the strategy's default. Checked by check_strategy."""

    strategy: str = setting("fedavg", "how updates are aggregated: " + ", ".join(STRATEGIES),
                            choices=STRATEGIES, group=STRATEGY)
    update: str = setting("weights", "what clients send: weights, delta (new minus global) "
                          "or gradient (mean gradient over local batches, no local step)",
                          choices=UPDATES, group=STRATEGY)
    encoding: str = setting("f32", "how updates travel: f32, f16, int8 (symmetric, a float "
                            "scale per output channel) or topk (largest entries and their "
                            "indices, with client-side error feedback)",
                            choices=ENCODINGS, group=STRATEGY)
    server_lr: float | None = setting(
        None, "server step size: 1.0 for the FedAvg family and the robust ones, 0.01 for "
        "fedadam, fedyogi and fedadagrad", shown="the strategy's", low=0, low_open=True,
        group=STRATEGY)
    server_momentum: float | None = setting(
        None, "fedavgm only: the server's momentum", shown="0.9", low=0, high=1,
        high_open=True, group=STRATEGY)
    mu: float | None = setting(None, "fedprox only: the clients' proximal coefficient",
                               shown="0.01", low=0, group=STRATEGY)
    trim: float | None = setting(None, "trimmed-mean only: the share cut at each end",
                                 shown="0.2", low=0, high=0.5, high_open=True, group=STRATEGY)
    byzantine_f: int | None = setting(
        None, "krum and multikrum only: hostile clients tolerated (needs at least 2f+3 "
        "updates a round)", shown="1", low=0, group=STRATEGY)
    topk_fraction: float = setting(0.1, "topk only: the share of each tensor's entries sent",
                                   low=0, high=1, low_open=True, group=STRATEGY)
    secure_aggregation: bool = setting(
        False, "SecAgg+: devices mask their updates and the server learns only their sum "
        "(docs/secure-aggregation.md); FedAvg family and FedOpt only", group=STRATEGY)
    secure_threshold: float = setting(
        0.5, "secure aggregation: a secret is rebuilt from more than this share of a "
        "device's neighbours (at least 0.5, so that a lying server cannot get both)",
        low=0.5, high=1, high_open=True, group=STRATEGY)
    secure_neighbours: int = setting(
        0, "secure aggregation: neighbours each device pairs with", shown="4 x ceil(log2 "
        "n), at least 8", low=0, group=STRATEGY)
    secure_clip: float = setting(
        10.0, "secure aggregation: the L2 bound devices clip their update (distance from "
        "the global model) to before quantizing", low=0, low_open=True, group=STRATEGY)
    secure_stage_timeout_s: float = setting(
        30.0, "secure aggregation: how long the key and unmasking stages wait for "
        "devices", flag="--secure-stage-timeout", low=0.1, group=STRATEGY)


def check_strategy(config: Any, updates_per_round: int) -> None:
    """Checks how the strategy settings combine, naming the key at fault (each one alone
    is checked by its declaration); updates_per_round is the fewest updates a round
    commits with."""
    for key, owners in _OWNERS.items():
        if getattr(config, key) is not None and config.strategy not in owners:
            raise ConfigError(f"{key} applies to strategy {' or '.join(owners)}, not "
                              f"{config.strategy!r}")
    if config.encoding == "topk" and config.update == "weights":
        raise ConfigError("encoding 'topk' sends a few entries of an update and needs "
                          "update 'delta' or 'gradient' (not 'weights')")
    if config.strategy == "fedprox" and config.update == "gradient":
        raise ConfigError("strategy 'fedprox' adds a proximal term to local training; "
                          "update 'gradient' takes no local step (use 'weights' or 'delta')")
    if config.secure_aggregation:
        check_secure(config)
    if config.strategy in ("krum", "multikrum"):
        f = 1 if config.byzantine_f is None else config.byzantine_f
        if updates_per_round < 2 * f + 3:
            raise ConfigError(f"strategy {config.strategy!r} with byzantine_f {f} needs at "
                              f"least {2 * f + 3} updates per round (min_clients), got "
                              f"{updates_per_round}")


def check_secure(config: Any) -> None:
    """Refuses what cannot run on masked updates (secure aggregation on)."""
    if config.strategy in BUFFERING:
        raise ConfigError(f"strategy {config.strategy!r} needs every update in the clear; "
                          "secure aggregation gives the server only their sum (use the "
                          "FedAvg family or FedOpt)")
    if getattr(config, "norm_action", "refuse") == "clip":
        raise ConfigError("norm_action 'clip' is a per-update server check, impossible on "
                          "masked updates; with secure aggregation devices clip to "
                          "secure_clip")
    if config.encoding != "f32":
        raise ConfigError(f"encoding {config.encoding!r} applies to plain updates; a secure "
                          "update travels masked in Z_2^32 (use encoding 'f32')")
