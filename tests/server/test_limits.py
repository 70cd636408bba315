"""The admission limits without gRPC: request rate per key, the key of an anonymous
peer, and the cap on uploads in flight."""

from __future__ import annotations

import pytest

from fedge.refusals import Busy
from fedge.server.limits import RateLimiter, UploadSlots, peer_host


def test_rate_limit_allows_a_burst_then_refuses_per_key() -> None:
    limiter = RateLimiter(rate=0.001, burst=3)
    for _ in range(3):
        limiter.admit("a")
    with pytest.raises(Busy, match="too many requests from 'a'"):
        limiter.admit("a")
    limiter.admit("b")
    RateLimiter(rate=0, burst=1).admit("a")  # off


def test_an_anonymous_peer_is_keyed_by_its_address_not_its_port() -> None:
    assert peer_host("ipv4:10.0.0.7:51234") == peer_host("ipv4:10.0.0.7:40001") == (
        "ipv4:10.0.0.7")
    assert peer_host("ipv6:[::1]:51234") == "ipv6:[::1]"
    assert peer_host("ipv6:%5B::1%5D:51234") == "ipv6:%5B::1%5D"
    assert peer_host("ipv4:10.0.0.7:1") != peer_host("ipv4:10.0.0.8:1")
    assert peer_host("unix:/run/fedge.sock") == "unix:/run/fedge.sock"


def test_upload_slots_refuse_past_the_cap_and_free_on_exit() -> None:
    slots = UploadSlots(1)
    with slots.hold(), pytest.raises(Busy, match="receiving 1 updates"), slots.hold():
        pass
    with slots.hold():
        pass
