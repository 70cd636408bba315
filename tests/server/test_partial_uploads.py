"""The store of broken update streams: a resumed stream goes on where the kept part
ends, and no device (nor a crowd of them) can make it hold more than its limits."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from fedge.protos.fedge_pb2 import TensorChunk, UpdateHeader
from fedge.refusals import EndedEarly, Refused, ResumeLost, StreamCut
from fedge.server.intake import Expected, Received, receive
from fedge.server.partial_uploads import PartialUploads
from fedge.tensors import fingerprint, iter_chunks, stream_sha256

ARRAYS = {"a": np.arange(3000, dtype=np.float32), "b": np.zeros(0, np.float32),
          "c": np.arange(5000, dtype=np.float32).reshape(50, 100)}
WIRE = fingerprint(ARRAYS)
EXPECTED = Expected(tuple(WIRE), "f32", 0.0, 1 << 20)
SHA = stream_sha256(ARRAYS)
CHUNK = 4096


def _half() -> Received:
    """What a stream cut after its first two chunks (inside tensor a) left behind."""
    received = Received(WIRE)
    chunks = iter_chunks(ARRAYS, CHUNK)
    with pytest.raises(ConnectionError):
        receive(_cut_after(chunks, 2), EXPECTED, SHA, received)
    return received


def _cut_after(chunks: Iterator[TensorChunk], count: int) -> Iterator[TensorChunk]:
    for i, chunk in enumerate(chunks):
        if i == count:
            raise ConnectionError("link cut")
        yield chunk


def test_a_stream_resumed_from_the_kept_offset_gives_the_whole_update() -> None:
    received = _half()
    assert received.offset == 2 * CHUNK
    # b (empty) sorts between a (12000 bytes) and c: the resumed stream starts inside a.
    update = receive(iter_chunks(ARRAYS, CHUNK, start=received.offset), EXPECTED, SHA,
                     received)
    for name, array in ARRAYS.items():
        np.testing.assert_array_equal(update[name], array)


@pytest.mark.parametrize("start", [12000, 12000 + 4 * 1000])
def test_chunks_from_a_tensor_boundary_or_inside_one_skip_what_was_sent(start: int) -> None:
    chunks = list(iter_chunks(ARRAYS, CHUNK, start=start))
    assert sum(len(c.data) for c in chunks) == 32000 - start
    assert chunks[0].name == ("b" if start == 12000 else "c")


def test_a_device_holds_one_partial_upload_and_a_wrong_offset_is_refused() -> None:
    store = PartialUploads(max_bytes=1 << 20, ttl_s=60)
    assert store.keep("d1", "t1", SHA, _half(), time.time() + 60)
    assert store.keep("d1", "t1", SHA, _half(), time.time() + 60)  # replaces the first
    assert len(store) == 1 and store.held == 12000  # only a's array exists yet
    assert store.offset("d1", "t1", SHA) == 2 * CHUNK
    assert store.offset("d1", "t2", SHA) == 0  # another task's update: nothing held
    with pytest.raises(ResumeLost):
        store.take("d1", "t1", SHA, CHUNK, WIRE)
    assert len(store) == 0  # a wrong offset drops it: the device starts over


def test_partial_uploads_together_stay_within_their_byte_limit() -> None:
    store = PartialUploads(max_bytes=3 * 12000, ttl_s=60)
    kept = [store.keep(f"d{i}", "t", SHA, _half(), time.time() + 60) for i in range(10)]
    assert kept == [True] * 3 + [False] * 7
    assert store.held <= 3 * 12000


def test_partial_uploads_expire_after_their_ttl_or_their_round_deadline() -> None:
    now = [100.0]
    store = PartialUploads(max_bytes=1 << 20, ttl_s=30, clock=lambda: now[0])
    store.keep("d1", "t", SHA, _half(), time.time() + 60)
    store.keep("d2", "t", SHA, _half(), time.time() + 5)  # its round ends first
    now[0] += 10
    assert store.offset("d1", "t", SHA) == 2 * CHUNK and store.offset("d2", "t", SHA) == 0
    now[0] += 25
    assert len(store) == 0
    assert not store.keep("d3", "t", SHA, _half(), time.time() - 1)  # deadline passed


@pytest.mark.parametrize("hung_up", [True, False])
def test_a_stream_that_ends_early_is_kept_only_when_its_device_hung_up(hung_up: bool) -> None:
    """gRPC may end a broken call's request iterator before it marks the call
    cancelled: an early end is then a cut (kept, not settling) if the device turns out to
    have hung up, and an invalid update (refused, nothing kept) if it ended the stream."""
    store = PartialUploads(max_bytes=1 << 20, ttl_s=60)
    header = UpdateHeader(task_id="t1", sha256=SHA)
    chunks = list(iter_chunks(ARRAYS, CHUNK))[:2]
    with pytest.raises(Refused) as info:
        store.receive("d1", header, chunks, EXPECTED, time.time() + 60, lambda: hung_up)
    assert type(info.value) is (StreamCut if hung_up else EndedEarly), info.value
    assert not info.value.rule.settles if hung_up else info.value.rule.settles
    assert store.offset("d1", "t1", SHA) == (2 * CHUNK if hung_up else 0)
