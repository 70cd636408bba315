"""Admission limits that keep one device (or a crowd) from starving the rest:
a per-device request rate and a cap on uploads held in memory at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fedge.refusals import Busy


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second, bursts up to ``burst``.

    rate <= 0 turns the limit off.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)

    def admit(self, key: str) -> None:
        """Takes one request from key's bucket, or raises Busy."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise Busy(f"too many requests from {key!r}: the limit is "
                                f"{self.rate:g}/s; retry in {wait:.2f} s")
            self._buckets[key] = (tokens - 1.0, now)


def peer_host(peer: str) -> str:
    """The address of a gRPC peer without its port: ``ipv4:10.0.0.7:51234`` ->
    ``ipv4:10.0.0.7``, ``ipv6:[::1]:51234`` -> ``ipv6:[::1]`` (gRPC may write the brackets
as ``%5B``/``%5D``); others as they are.

    A device's every new connection comes from a new ephemeral port, so a limit keyed on
    the whole peer string would be per connection, not per device.
    """
    scheme, sep, rest = peer.partition(":")
    if not sep or scheme not in ("ipv4", "ipv6"):
        return peer
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit() or (scheme == "ipv6" and not host.endswith(("]", "%5D"))):
        return peer
    return f"{scheme}:{host}"


class UploadSlots:
    """At most ``limit`` update streams in flight; the next one is refused, not queued,
    so a device backs off instead of holding a server thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise Busy(f"the server is receiving {self.limit} updates already; "
                            "retry shortly")
        try:
            yield
        finally:
            self._slots.release()
