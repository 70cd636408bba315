"""The admission limits without gRPC: request rate per key, the key of an anonymous
peer, and the cap on uploads in flight."""

from __future__ import annotations

import time

import pytest

from fedge.refusals import Busy, UploadInProgress
from fedge.server.limits import CallLimits, RateLimiter, UploadSlots, peer_host


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


def test_rate_limit_memory_is_bounded_and_refilled_buckets_are_forgotten() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_keys=10)
    for k in range(1000):  # a crowd of addresses or made-up tokens
        limiter.admit(f"key-{k}")
    assert len(limiter) == 10
    fast = RateLimiter(rate=1000.0, burst=1)
    fast.admit("a")
    time.sleep(0.01)  # refilled: the bucket says nothing any more
    fast.admit("b")
    assert len(fast) == 1


def test_check_refuses_an_empty_bucket_without_taking_from_it() -> None:
    limiter = RateLimiter(rate=0.001, burst=2)
    limiter.check("a")
    limiter.check("a")  # took nothing
    limiter.admit("a")
    limiter.admit("a")
    with pytest.raises(Busy, match="too many requests from 'peer x'"):
        limiter.check("a", who="peer x")


def test_one_upload_per_device_at_a_time() -> None:
    slots = UploadSlots(4)
    with slots.device("d"), pytest.raises(UploadInProgress, match="one at a time"), \
            slots.device("d"):
        pass
    with slots.device("d"), slots.device("e"):  # freed on exit; others unaffected
        pass


def test_calls_without_a_token_do_not_slow_enrolled_devices_behind_the_same_address() -> None:
    limits = CallLimits(rate=0.001, burst=2)
    for _ in range(2):
        limits.without_token("peer ipv4:10.0.0.7")
    with pytest.raises(Busy, match=r"'peer ipv4:10\.0\.0\.7'"):
        limits.without_token("peer ipv4:10.0.0.7")
    limits.before_lookup("a" * 64, "peer ipv4:10.0.0.7")  # an enrolled device's own bucket
    limits.failed_lookup("peer ipv4:10.0.0.7")
    limits.failed_lookup("peer ipv4:10.0.0.7")
    # Failed tokens spent the address's burst: the next token is refused before its lookup.
    with pytest.raises(Busy):
        limits.before_lookup("b" * 64, "peer ipv4:10.0.0.7")
    limits.before_lookup("b" * 64, "peer ipv4:10.0.0.8")
