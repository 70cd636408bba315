"""An update's chunks carry a CRC-32 only to a server that does not check the stream's
SHA-256 alone (JoinReply.update_crc_optional unset: an older server refuses a chunk
without one)."""

from __future__ import annotations

import zlib

import numpy as np

from fedge.client.transfers import update_stream
from fedge.protos import fedge_pb2


def _chunks(crc: bool) -> list[fedge_pb2.TensorChunk]:
    header = fedge_pb2.UpdateHeader(task_id="t", round=1)
    weights = {"a": np.arange(300_000, dtype=np.float32), "b": np.ones(3, np.float32)}
    messages = list(update_stream(header, weights, crc))
    assert messages[0] == fedge_pb2.UpdateChunk(header=header)
    return [fedge_pb2.UpdateChunk.FromString(m).tensor for m in messages[1:]]  # type: ignore[arg-type]


def test_chunks_carry_a_crc_only_when_the_server_wants_one() -> None:
    with_crc, without = _chunks(True), _chunks(False)
    assert len(with_crc) == len(without) == 3  # 1.2 MB of "a" in two chunks, then "b"
    assert all(c.HasField("crc32") and c.crc32 == zlib.crc32(c.data) for c in with_crc)
    assert not any(c.HasField("crc32") for c in without)
    assert [c.data for c in with_crc] == [c.data for c in without]
