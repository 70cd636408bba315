"""Prometheus metrics of a running server, read from its state at scrape time
(served by :class:`fedge.metrics.MetricsEndpoint`).

A collector, rather than counters bumped all over the code: the round state machine,
the registry, the service and the store already hold every number, so a scrape reads
them under their own locks and nothing else has to know metrics exist. Each server gets
its own registry, so several servers in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fedge.server.registry import Registry
from fedge.server.rounds import Rounds
from fedge.server.store import StateStore

log = logging.getLogger(__name__)

ROUND_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def histogram(values: list[float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets (with +Inf) of values."""
    buckets = [(repr(b), float(sum(v <= b for v in values))) for b in bounds]
    return [*buckets, ("+Inf", float(len(values)))]


class ServerCollector(Collector):
    """Reads a server's state into Prometheus metric families."""

    def __init__(self, rounds: Rounds, registry: Registry, store: StateStore,
                 refusals: Callable[[], Mapping[tuple[str, str], int]],
                 extra: Callable[[], Mapping[str, float]] | None = None) -> None:
        self._rounds, self._registry, self._store = rounds, registry, store
        self._refusals, self._extra = refusals, extra

    def collect(self) -> Iterator[Metric]:
        progress = self._rounds.progress()
        totals = self._rounds.totals
        committed = [r for r in self._store.rounds() if r.round > 0]
        yield _counter("fedge_rounds_committed", "Rounds committed (the initial model is not "
                       "counted).", len(committed))
        durations = [r.seconds for r in committed]
        hist = HistogramMetricFamily("fedge_round_duration_seconds", "Time from a round's "
                                     "opening to its commit.")
        hist.add_metric([], histogram(durations, ROUND_BUCKETS), sum(durations))
        yield hist
        yield _gauge("fedge_model_version", "The newest committed model version.",
                     progress.model_version)
        yield _gauge("fedge_round", "The round in progress (or next).", progress.round)
        # Test accuracy lands after the commit (fedge.server.eval_worker): the newest round
        # that has it, which may trail the model version by a round.
        evaluated = [r for r in committed if r.accuracy is not None]
        if evaluated:
            yield _gauge("fedge_evaluated_round", "The newest round evaluated on the test "
                         "split.", evaluated[-1].round)
            yield _gauge("fedge_accuracy", "Test accuracy of the newest evaluated round.",
                         evaluated[-1].accuracy or 0.0)
            yield _gauge("fedge_loss", "Test loss of the newest evaluated round.",
                         evaluated[-1].loss or 0.0)
        live = len(self._registry.live())
        yield _gauge("fedge_devices_connected", "Devices heard from within the device "
                     "timeout.", live)
        yield _gauge("fedge_devices_inference_only", "Connected devices that cannot train "
                     "(never sampled; they only install edge models).",
                     sum(d.inference_only for d in self._registry.live()))
        yield _gauge("fedge_devices_selected", "Devices handed the open round's task.",
                     progress.selected)
        yield _gauge("fedge_devices_reported", "Selected devices whose update was accepted.",
                     progress.reported)
        yield _counter("fedge_updates_accepted", "Updates folded into a round.",
                       totals.updates_accepted)
        refused = CounterMetricFamily("fedge_updates_refused", "Requests refused, by method "
                                      "and gRPC status.", labels=["method", "reason"])
        for (method, code), count in sorted(self._refusals().items()):
            refused.add_metric([method, code], count)
        yield refused
        yield _counter("fedge_bytes_received", "Bytes received on the wire.",
                       totals.bytes_up)
        yield _counter("fedge_bytes_sent", "Bytes sent on the wire.", totals.bytes_down)
        yield _counter("fedge_aggregation_seconds", "Time spent folding updates into rounds.",
                       totals.aggregation_seconds)
        for name, value in (self._extra() if self._extra else {}).items():
            yield _gauge(name, name.replace("_", " "), value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
