"""A Prometheus /metrics endpoint with its own registry, for the server and the daemon.

Each endpoint has its own registry, so several servers or daemons in one process (tests,
simulations) do not collide in prometheus_client's global one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedge.errors import FedgeError

log = logging.getLogger(__name__)


class ValuesCollector(Collector):
    """Counters and gauges read from a function of name -> value at scrape time.

    Names ending in ``_total`` are counters (exposed under the name without it, which
    prometheus_client suffixes again); the rest are gauges.
    """

    def __init__(self, values: Callable[[], Mapping[str, tuple[float, str]]]) -> None:
        self._values = values

    def collect(self) -> Iterator[Metric]:
        for name, (value, doc) in self._values().items():
            if name.endswith("_total"):
                yield CounterMetricFamily(name.removesuffix("_total"), doc, value=value)
            else:
                yield GaugeMetricFamily(name, doc, value=value)


class MetricsEndpoint:
    """An HTTP /metrics endpoint for one collector."""

    def __init__(self, collector: Collector) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> int:
        """Serves /metrics on host:port (0 picks a free port); returns the port."""
        try:
            self._server, self._thread = start_http_server(port, addr=host,
                                                           registry=self.registry)
        except OSError as exc:
            raise FedgeError(f"cannot serve metrics on {host}:{port} (--metrics-port): "
                             f"{exc.strerror}; stop what holds it or choose another "
                             "port") from None
        bound = int(self._server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
