"""The daemon acts on the server's refusals as the one table (fedge.refusals) says, over
real gRPC: a refusal of what was sent is final (the update is sent once, the daemon
takes the next task), a refusal about the server's load is resent after a backoff."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from fedge.client.channel import refusal_of
from fedge.protos import fedge_pb2
from fedge.refusals import RULES
from tests.faults.rawdevice import RawDevice, digits_weights
from tests.fleet import Fleet


def test_an_oversize_update_is_sent_once_and_the_daemon_goes_on(fleet: Fleet) -> None:
    (data,) = fleet.partitions("digits-mlp", 1)
    # The digits model is ~104 kB of float32: every update is over this limit. The round
    # misses its quorum twice (one refused update each time) and the run ends.
    server = fleet.server(rounds=1, min_clients=1, max_update_bytes=20_000,
                          max_round_attempts=2, retry_backoff_s=0.2)
    port = server.start()
    started = time.monotonic()
    client = fleet.client(port, data, "big")
    server.wait(timeout=60)
    fleet.join_clients()
    assert time.monotonic() - started < 30  # not until the 60 s deadline

    (stats,) = client.stats
    assert stats.updates_refused == 2 and stats.rounds_trained == 0
    assert stats.joins == 1 and stats.stopped_by_server  # no rejoin, no error
    # Each refused update reached the server once: nothing was resent.
    assert {k: v for k, v in server.service.refusals.items() if k[0] == "SubmitUpdate"} == {
        ("SubmitUpdate", "RESOURCE_EXHAUSTED"): 2}


def test_an_update_refused_while_the_server_is_busy_is_resent(fleet: Fleet) -> None:
    (data,) = fleet.partitions("digits-mlp", 1)
    server = fleet.server(rounds=1, min_clients=2, max_uploads=1)
    port = server.start()
    # The hog's upload of its own task holds the server's only slot until released (a
    # stream must answer an open task before it takes a slot).
    hog = RawDevice(port, "hog", server.tokens.create("hog"))
    hog.join()
    client = fleet.client(port, data, "patient")
    stream = hog.stream(hog.poll_train(), digits_weights())
    release = threading.Event()

    def held_until_released() -> Iterator[fedge_pb2.UpdateChunk]:
        yield stream[0]
        release.wait(30)
        yield from stream[1:]

    holder = threading.Thread(target=lambda: _refused(lambda: hog.submit(
        held_until_released())), daemon=True)
    holder.start()
    deadline = time.monotonic() + 30
    while server.service.refusals[("SubmitUpdate", "RESOURCE_EXHAUSTED")] < 2:
        assert time.monotonic() < deadline, "the daemon never met the busy server"
        time.sleep(0.05)
    release.set()
    records = server.wait(timeout=60)
    fleet.join_clients()
    holder.join(10)
    hog.close()
    assert records[-1].round == 1 and records[-1].clients == 2
    (stats,) = client.stats
    assert stats.rounds_trained == 1 and stats.updates_refused == 0 and stats.joins == 1


def _refused(call: Callable[[], object]) -> None:
    with contextlib.suppress(grpc.RpcError):  # the hog's empty stream is refused
        call()


class _Failed(grpc.RpcError):
    """A failed call as gRPC hands it to the daemon: a status and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, name: str | None) -> None:
        self._code, self._name = code, name

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "why"

    def trailing_metadata(self) -> Any:
        return () if self._name is None else (("fedge-refusal", self._name),)


@pytest.mark.parametrize(("code", "name", "resend", "rejoin"), [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "too_large", False, False),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", True, False),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, None, True, False),  # an older server: busy
    (grpc.StatusCode.UNAVAILABLE, None, True, False),
    (grpc.StatusCode.NOT_FOUND, "unknown_session", False, True),
    (grpc.StatusCode.ALREADY_EXISTS, "already_settled", False, False),
    (grpc.StatusCode.INVALID_ARGUMENT, "invalid_update", False, False),
])
def test_a_failed_call_is_read_through_the_table(code: grpc.StatusCode, name: str | None,
                                                 resend: bool, rejoin: bool) -> None:
    refusal = refusal_of(_Failed(code, name))
    assert refusal.code == code.name and refusal.name == (name or "")
    assert refusal.resend is resend and refusal.needs_new_session is rejoin
    if name is not None:
        assert refusal.rule == RULES[name]
