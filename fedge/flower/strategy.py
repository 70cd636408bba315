"""fedge's strategies as Flower strategies, for a Flower ServerApp and ``run_simulation``.

:class:`FedgeStrategy` is Flower's own (Message-API) ``FedAvg`` with one thing changed:
``aggregate_train`` hands the round's replies to a fedge strategy
(:mod:`fedge.server.strategies`) exactly as a fedge server does. Each reply becomes a
pseudo-gradient against the round's global model (``w_global - w_k``), folded into the
strategy's accumulator with its example count; the strategy aggregates and steps. So
FedAvg is fedge's streaming fold (O(model) memory however many nodes reply), FedAdam
and the FedOpt family keep their server optimizer state across rounds, and Median,
TrimmedMean and Krum are the robust rules fedge's server runs. Sampling, configuration,
federated evaluation and metrics stay Flower's.

The named subclasses (:class:`FedAvg`, :class:`FedAdam`, :class:`FedYogi`,
:class:`FedAdagrad`, :class:`FedAvgM`, :class:`Median`, :class:`TrimmedMean`,
:class:`Krum`) take Flower's FedAvg arguments and the fedge strategy's own
(``server_lr``, ``server_momentum``, ``trim``, ``byzantine_f``) as keywords::

    from fedge.flower.strategy import TrimmedMean
    strategy = TrimmedMean(trim=0.2, fraction_evaluate=0.0)
    strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedge.server.strategies.catalog import build_strategy
from fedge.server.strategies.spec import Strategy

STRATEGY_OPTIONS = ("server_lr", "server_momentum", "mu", "trim", "byzantine_f")


def fold_round(strategy: Strategy[Any], global_arrays: Mapping[str, np.ndarray],
               updates: Iterable[tuple[Mapping[str, np.ndarray], float]]
               ) -> dict[str, np.ndarray]:
    """One round of a fedge strategy: the new global model from the clients' models and
    their weights (the math a fedge server's intake and commit do, without the wire)."""
    acc = strategy.new_accumulator()
    for weights, count in updates:
        if weights.keys() != global_arrays.keys():
            raise ValueError("a reply's arrays are not named as the global model's")
        acc.add({name: np.subtract(global_arrays[name], weights[name],
                                   dtype=global_arrays[name].dtype)
                 for name in global_arrays}, float(count))
    if acc.count == 0:
        raise ValueError("no updates to aggregate")
    return strategy.step(global_arrays, strategy.aggregate(acc))


class FedgeStrategy(FlowerFedAvg):
    """Flower's FedAvg whose aggregation is a fedge strategy.

    strategy: a fedge strategy (``fedge.server.strategies``); the other arguments are
    Flower FedAvg's (fraction_train, min_train_nodes, weighted_by_key, ...).
    """

    def __init__(self, strategy: Strategy[Any], **flower_options: Any) -> None:
        super().__init__(**flower_options)
        self.fedge = strategy
        self.current: dict[str, np.ndarray] | None = None

    def summary(self) -> None:
        """Flower's summary, plus which fedge strategy aggregates."""
        super().summary()
        from flwr.common.logger import log

        log(20, "\t└──> fedge strategy: %s", self.fedge.describe())

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Flower's sampling and configuration; remembers the round's global model."""
        self.current = {name: np.asarray(a.numpy()) for name, a in arrays.items()}
        extra = self.fedge.client_config()  # FedProx's mu, under Flower's config
        for key, value in extra.items():
            config[key] = value
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The fedge strategy's step from the round's global model and the replies."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid or self.current is None:
            return None, None
        contents = [msg.content for msg in valid]
        updates = []
        for content in contents:
            record = content.array_records[self.arrayrecord_key] \
                if self.arrayrecord_key in content.array_records \
                else next(iter(content.array_records.values()))
            count = next(iter(content.metric_records.values()))[self.weighted_by_key]
            updates.append(({n: np.asarray(a.numpy()) for n, a in record.items()},
                            float(count)))  # type: ignore[arg-type]
        new = fold_round(self.fedge, self.current, updates)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return ArrayRecord({n: Array(np.ascontiguousarray(a)) for n, a in new.items()}), metrics


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the fedge strategy's options, Flower FedAvg's)."""
    ours = {k: options.pop(k) for k in STRATEGY_OPTIONS if k in options}
    return ours, options


class _Named(FedgeStrategy):
    """A FedgeStrategy of the fedge strategy called ``fedge_name``."""

    fedge_name = "fedavg"

    def __init__(self, **options: Any) -> None:
        ours, flowers = _split(dict(options))
        super().__init__(build_strategy(self.fedge_name, **ours), **flowers)


class FedAvg(_Named):
    """fedge's FedAvg (the streaming fold; server_lr 1.0 is plain FedAvg)."""

    fedge_name = "fedavg"


class FedAvgM(_Named):
    """fedge's FedAvgM (server momentum)."""

    fedge_name = "fedavgm"


class FedAdam(_Named):
    """fedge's FedAdam (FedOpt with Adam on the server)."""

    fedge_name = "fedadam"


class FedYogi(_Named):
    """fedge's FedYogi (FedOpt with Yogi on the server)."""

    fedge_name = "fedyogi"


class FedAdagrad(_Named):
    """fedge's FedAdagrad (FedOpt with Adagrad on the server)."""

    fedge_name = "fedadagrad"


class Median(_Named):
    """fedge's coordinate-wise median (robust)."""

    fedge_name = "median"


class TrimmedMean(_Named):
    """fedge's coordinate-wise trimmed mean (robust; ``trim`` per side)."""

    fedge_name = "trimmed-mean"


class Krum(_Named):
    """fedge's Krum (robust; ``byzantine_f`` tolerated attackers)."""

    fedge_name = "krum"
