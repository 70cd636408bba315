"""Chunks serialized by hand are the protobuf messages they stand for, byte for byte
as protobuf parses them, with data sizes that need one- to three-byte lengths."""

from __future__ import annotations

import os
import zlib

import pytest

from fedge import chunk_wire
from fedge.protos import fedge_pb2


@pytest.mark.parametrize("size", [0, 100, 300_000, 1 << 20])
def test_a_hand_serialized_model_chunk_parses_as_the_message(size: int) -> None:
    data = os.urandom(size)
    wire = chunk_wire.model_chunk(7, 1 << 40, memoryview(data), 5 << 30, "a" * 64)
    assert fedge_pb2.ModelChunk.FromString(wire) == fedge_pb2.ModelChunk(
        model_version=7, offset=1 << 40, data=data, total_size=5 << 30, sha256="a" * 64)


@pytest.mark.parametrize("size", [0, 100, 300_000, 1 << 20])
def test_a_hand_serialized_update_chunk_parses_as_the_message(size: int) -> None:
    data = os.urandom(size)
    wire = chunk_wire.update_tensor_chunk("layer.0.weight", "float32", (3, 7), 12,
                                          memoryview(data), zlib.crc32(data))
    assert fedge_pb2.UpdateChunk.FromString(wire) == fedge_pb2.UpdateChunk(
        tensor=fedge_pb2.TensorChunk(name="layer.0.weight", dtype="float32", shape=(3, 7),
                                     offset=12, data=data, crc32=zlib.crc32(data)))


def test_passthrough_sends_bytes_as_they_are_and_serializes_messages() -> None:
    header = fedge_pb2.UpdateChunk(header=fedge_pb2.UpdateHeader(task_id="t", round=2))
    assert chunk_wire.passthrough(b"raw") == b"raw"
    assert chunk_wire.passthrough(header) == header.SerializeToString()
