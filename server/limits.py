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
        """Takes one request from key's bucket, or raises Exhausted."""
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
