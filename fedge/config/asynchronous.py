"""The settings of buffered asynchronous training (FedBuff), shared by ``fedge server``
and ``fedge simulate`` and declared once (see fedge.config.settings). README "Asynchronous
training" and docs/async.md say what each does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedge.config.settings import setting
from fedge.errors import ConfigError

MODES = ("sync", "async")
# How an update's weight falls with its staleness s (fedge.server.staleness).
STALENESS = ("sqrt", "polynomial", "constant", "hinge")
ASYNC = "async"  # the docs group of these settings


@dataclass(frozen=True)
class AsyncSettings:
    """Synchronous rounds, or FedBuff: devices train whenever fewer than concurrency do,
    and every buffer_size updates make a new model version. In async mode ``rounds`` counts
    model versions. Checked by check_async."""

    mode: str = setting("sync", "sync: rounds of sampled devices; async: buffered "
                        "asynchronous training (FedBuff), a model version every "
                        "buffer_size updates (rounds then counts versions)",
                        choices=MODES, group=ASYNC)
    concurrency: int = setting(10, "async: devices training at once (a polling device gets "
                               "a task while fewer train)", low=1, group=ASYNC)
    buffer_size: int = setting(5, "async: updates folded into each new model version",
                               low=1, group=ASYNC)
    max_staleness: int = setting(10, "async: an update started from a model more than this "
                                 "many versions old is refused (too_stale)", low=0,
                                 group=ASYNC)
    staleness: str = setting("sqrt", "async: an update's weight times its examples, by its "
                             "staleness s: sqrt 1/sqrt(1+s), polynomial (1+s)^-a, constant "
                             "1, hinge 1 up to staleness_exponent versions then 1/(1+s-b)",
                             choices=STALENESS, group=ASYNC)
    staleness_exponent: float = setting(0.5, "async: a of polynomial, b of hinge", low=0,
                                        group=ASYNC)
    eval_every: int = setting(1, "test-split evaluation of the global model every N rounds "
                              "(async: versions) and always the last; sync: the others "
                              "have no accuracy, async: they keep the last measured one",
                              low=1, group=ASYNC)


def updates_per_version(config: Any, per_round: int) -> int:
    """The fewest updates a model version is made of: buffer_size in async mode, else
    per_round (a round's)."""
    return config.buffer_size if config.mode == "async" else per_round


def check_async(config: Any) -> None:
    """Refuses what async mode does not run with, naming the key at fault."""
    if config.mode != "async":
        return
    if config.secure_aggregation:
        raise ConfigError("secure_aggregation runs in sync rounds only: a masked sum needs "
                          "a fixed cohort (mode 'async' has none)")
    if config.dp == "central":
        raise ConfigError("dp 'central' accounts sampled rounds; mode 'async' runs with dp "
                          "'local' or 'off'")
    for key in ("eval_every_rounds", "canary_fraction", "relays"):
        if getattr(config, key, 0):
            raise ConfigError(f"{key} runs in sync rounds only for now: mode 'async' does "
                              "not open federated evaluations, canary stages or relay "
                              "rounds on its versions")
