"""Admission checks without gRPC: the chunks a stream may send, the tensor count its
header may announce, the clocks of a watched stream, and anonymous seats per address."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fedge.protos import fedge_pb2
from fedge.refusals import Busy, InvalidUpdate
from fedge.server.admission import (
    AddressSeats,
    Watched,
    admitted_chunks,
    check_num_tensors,
    max_chunks,
)
from fedge.server.registry import Device
from fedge.tensors import Spec

WIRE = [Spec("w", "float32", (1000,)), Spec("empty", "float32", (0,))]


def _chunk(name: str, size: int) -> fedge_pb2.TensorChunk:
    return fedge_pb2.TensorChunk(name=name, data=b"\0" * size)


def test_chunks_of_a_tensor_with_bytes_must_carry_data() -> None:
    assert len(list(admitted_chunks([_chunk("w", 4000), _chunk("empty", 0)], WIRE))) == 2
    with pytest.raises(InvalidUpdate, match="empty chunk of tensor 'w'"):
        list(admitted_chunks([_chunk("w", 0)], WIRE))


def test_a_stream_is_refused_past_the_chunks_its_model_can_need() -> None:
    limit = max_chunks(WIRE)
    assert limit == 2 + 1  # one per tensor, plus 4000 bytes in 4 KiB chunks
    assert len(list(admitted_chunks([_chunk("w", 4)] * limit, WIRE))) == limit
    with pytest.raises(InvalidUpdate, match="over 3 chunks"):
        list(admitted_chunks([_chunk("w", 4)] * (limit + 1), WIRE))


def test_the_header_must_announce_the_tasks_tensor_count() -> None:
    check_num_tensors(2, WIRE)
    check_num_tensors(0, WIRE)  # a device that does not say
    with pytest.raises(InvalidUpdate, match="announces 3 tensors"):
        check_num_tensors(3, WIRE)


class _Context:
    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def test_a_watched_stream_expires_when_idle_or_past_its_end() -> None:
    context: Any = _Context()
    watched = Watched(context, "upload", idle_s=10.0, max_s=100.0)
    now = time.monotonic()
    assert watched.expired(now) == ""
    assert "idle" in watched.expired(now + 11)
    watched.end_by(time.time() + 5, "the deadline passed")
    assert watched.expired(now + 6) == "the deadline passed"
    watched.finish()
    assert watched.expired(now + 1000) == ""


def test_an_address_holds_a_bounded_number_of_live_anonymous_devices() -> None:
    seats = AddressSeats(2, lambda: 60.0)
    for name in ("a", "b"):
        seats.check("ipv4:1.2.3.4", name)
        seats.seat("ipv4:1.2.3.4", Device(name, name, 1))
    seats.check("ipv4:1.2.3.4", "a")  # a rejoin keeps its seat
    seats.check("ipv4:5.6.7.8", "c")  # another address is not affected
    with pytest.raises(Busy, match="2 live anonymous devices"):
        seats.check("ipv4:1.2.3.4", "c")
    seats._by_address["ipv4:1.2.3.4"]["a"].last_seen -= 120  # gone quiet
    seats.check("ipv4:1.2.3.4", "c")
    assert len(seats) == 1
