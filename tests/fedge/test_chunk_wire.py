"""Chunks serialized by hand are the protobuf messages they stand for, byte for byte
as protobuf parses them, with data sizes that need one- to three-byte lengths."""

from __future__ import annotations

import os
import zlib

import pytest
from google.protobuf.message import DecodeError

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


def test_a_chunk_without_a_crc_leaves_the_field_out() -> None:
    wire = chunk_wire.update_tensor_chunk("w", "float32", (2,), 0, bytes(8))
    assert not fedge_pb2.UpdateChunk.FromString(wire).tensor.HasField("crc32")


def _same_tensor(view: fedge_pb2.TensorChunk, message: fedge_pb2.TensorChunk) -> None:
    assert (view.name, view.dtype, list(view.shape), view.offset, bytes(view.data)) == (
        message.name, message.dtype, list(message.shape), message.offset, message.data)
    assert view.HasField("crc32") == message.HasField("crc32")
    assert view.crc32 == message.crc32


@pytest.mark.parametrize("size", [0, 100, 300_000, 1 << 20])
@pytest.mark.parametrize("crc", [True, False])
def test_update_chunks_parse_to_what_protobuf_parses_without_copying_data(
        size: int, crc: bool) -> None:
    data = os.urandom(size)
    message = fedge_pb2.TensorChunk(name="layer.0.weight", dtype="float32", shape=(3, 7),
                                    offset=12, data=data,
                                    crc32=zlib.crc32(data) if crc else None)
    by_hand = chunk_wire.update_tensor_chunk("layer.0.weight", "float32", (3, 7), 12,
                                             data, zlib.crc32(data) if crc else None)
    by_protobuf = fedge_pb2.UpdateChunk(tensor=message).SerializeToString()
    for wire in (by_hand, by_protobuf):  # data last, or in the middle
        parsed = chunk_wire.parse_update_chunk(wire)
        assert isinstance(parsed, chunk_wire.UpdateChunkView)
        assert parsed.WhichOneof("payload") == "tensor"
        assert parsed.ByteSize() == len(wire)
        _same_tensor(parsed.tensor, message)
        assert isinstance(parsed.tensor.data, memoryview)


def test_irregular_update_chunks_are_protobufs_to_parse_and_refuse() -> None:
    header = fedge_pb2.UpdateChunk(header=fedge_pb2.UpdateHeader(task_id="t", round=2))
    assert chunk_wire.parse_update_chunk(header.SerializeToString()) == header
    # Two data fields: the last wins, as protobuf has it; an unknown field is kept apart.
    tensor = chunk_wire.update_tensor_chunk("w", "int8", (3,), 0, b"abc")[2:]
    inner = tensor + bytes([5 << 3 | 2, 3]) + b"xyz" + bytes([14 << 3 | 0, 1])
    wire = bytes([2 << 3 | 2, len(inner)]) + inner
    parsed = chunk_wire.parse_update_chunk(wire)
    _same_tensor(parsed.tensor, fedge_pb2.UpdateChunk.FromString(wire).tensor)
    assert bytes(parsed.tensor.data) == b"xyz"
    # Two tensor fields (protobuf merges them) and a tensor then a header: protobuf's.
    twice = wire + wire
    assert chunk_wire.parse_update_chunk(twice) == fedge_pb2.UpdateChunk.FromString(twice)
    mixed = wire + header.SerializeToString()
    assert chunk_wire.parse_update_chunk(mixed) == fedge_pb2.UpdateChunk.FromString(mixed)
    # Cut, groups, a bad length, bad UTF-8 in a name: refused as protobuf refuses them.
    good = chunk_wire.update_tensor_chunk("w", "float32", (4,), 0, bytes(16))
    bad_name = chunk_wire.update_tensor_chunk("\u00e9", "float32", (4,), 0, bytes(16))
    bad_name = bad_name.replace("\u00e9".encode(), b"\xff\xfe")
    for garbage in (good[:-3], good[:3], bytes([2 << 3 | 2, 2, 3 << 3 | 3, 0]),
                    bytes([2 << 3 | 2, 90]) + bytes(5), bad_name, b"\xff" * 12):
        with pytest.raises(DecodeError):
            chunk_wire.parse_update_chunk(garbage)


@pytest.mark.parametrize("size", [0, 100, 1 << 20])
def test_model_chunks_parse_to_what_protobuf_parses(size: int) -> None:
    data = os.urandom(size)
    message = fedge_pb2.ModelChunk(model_version=7, offset=1 << 40, data=data,
                                   total_size=5 << 30, sha256="a" * 64)
    for wire in (chunk_wire.model_chunk(7, 1 << 40, data, 5 << 30, "a" * 64),
                 message.SerializeToString()):
        parsed = chunk_wire.parse_model_chunk(wire)
        assert (parsed.model_version, parsed.offset, bytes(parsed.data), parsed.total_size,
                parsed.sha256) == (7, 1 << 40, data, 5 << 30, "a" * 64)
    wire = chunk_wire.model_chunk(7, 0, data, 9, "a")
    for garbage in (wire + b"\x80", *([wire[:-1]] if size else [])):  # cut
        with pytest.raises(DecodeError):
            chunk_wire.parse_model_chunk(garbage)
