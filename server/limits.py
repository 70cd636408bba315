"""Admission limits that keep one device (or a crowd) from starving the rest:
a request rate per device or client address, and the uploads held at once (in all, and
one per device)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from fedge.refusals import Busy, UploadInProgress

MAX_KEYS = 1 << 16  # buckets kept at most; the least recently used goes first


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second, bursts up to ``burst``.

    rate <= 0 turns the limit off. Memory is bounded: a bucket that has refilled is the
    same as no bucket and is dropped, and at most ``max_keys`` are kept (least recently
    used first out), so a crowd of keys cannot grow the server.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_KEYS) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self.max_keys = max_keys
        self._lock = threading.Lock()
        # key -> (tokens, last time), oldest use first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, key: str, who: str = "") -> None:
        """Takes one request from key's bucket, or raises Busy (who: how the refusal
        names the caller; default the key)."""
        self._take(key, who or key, 1.0)

    def check(self, key: str, who: str = "") -> None:
        """Raises Busy if key's bucket is empty, taking nothing from it."""
        self._take(key, who or key, 0.0)

    def _take(self, key: str, who: str, cost: float) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._forget(now)
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise Busy(f"too many requests from {who!r}: the limit is "
                           f"{self.rate:g}/s; retry in {wait:.2f} s")
            self._buckets[key] = (tokens - cost, now)

    def _forget(self, now: float) -> None:
        """Drops buckets that have refilled (they say nothing) and, over max_keys, the
        least recently used."""
        refill = self.burst / self.rate
        while self._buckets:
            key, (_, last) = next(iter(self._buckets.items()))
            if now - last < refill and len(self._buckets) < self.max_keys:
                return
            del self._buckets[key]


class CallLimits:
    """The request rates a call is held to, before any work is done for it.

    A call without a token is limited per client address, not per connection (a new
    channel has a new ephemeral port but the same address), whether or not the server
    takes anonymous devices. A call with a token is limited per token (one token, one
    device) before the token is looked up; a token that fails the lookup is charged to
    its address too, in a bucket of its own (so a flood without tokens does not slow
    enrolled devices behind the same address), and an address whose failures emptied
    that bucket is refused before its next lookup.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.buckets = RateLimiter(rate, burst)

    def without_token(self, address: str) -> None:
        """Admits a call without a token from address, or raises Busy."""
        self.buckets.admit(f"anonymous {address}", who=address)

    def before_lookup(self, token_hash: str, address: str) -> None:
        """Admits a call with a token (by its hash) from address, or raises Busy."""
        self.buckets.check(f"failed {address}", who=address)
        self.buckets.admit(f"token {token_hash[:32]}", who="this device's token")

    def failed_lookup(self, address: str) -> None:
        """Charges a token that failed its lookup to its address (may raise Busy)."""
        self.buckets.admit(f"failed {address}", who=address)


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
    """At most ``limit`` update streams in flight, and one per device; the next one is
    refused, not queued, so a device backs off instead of holding a server thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._devices: set[str] = set()

    @contextmanager
    def device(self, device_id: str) -> Iterator[None]:
        """Holds device_id's own slot (one upload at a time) while the block runs."""
        with self._lock:
            if device_id in self._devices:
                raise UploadInProgress(f"device {device_id!r} is already sending an "
                                       "update; one at a time (retry when it ends)")
            self._devices.add(device_id)
        try:
            yield
        finally:
            with self._lock:
                self._devices.discard(device_id)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Holds one of the server's upload slots while the block runs."""
        if not self._slots.acquire(blocking=False):
            raise Busy(f"the server is receiving {self.limit} updates already; "
                       "retry shortly")
        try:
            yield
        finally:
            self._slots.release()
