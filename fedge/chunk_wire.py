"""The two messages that carry a model's bytes, serialized by hand.

protobuf's Python runtime (upb) takes about as long to serialize a fresh message holding
1 MiB of bytes as gRPC takes to move it over loopback (measured here: ~100-140 MB/s,
against ~12 GB/s for one join), so a model sent as protobuf messages moves at a fraction
of the link's speed. A ``ModelChunk`` or ``UpdateChunk`` is therefore written as its
small fields, serialized by protobuf, followed by its data field written by hand: the
same bytes on the wire (protobuf accepts fields in any order; parsing is unchanged and
fast), one copy of the data instead of three. gRPC sends the bytes as they are
(:func:`passthrough` is the serializer of the two RPCs on their sending side).

On the receiving side the same holds in reverse: upb copies a bytes field into a new
Python object on every access, so a 1 MiB chunk read by five filters was copied five
times. :func:`parse_update_chunk` and :func:`parse_model_chunk` (the deserializers of
the two RPCs on their receiving side) parse the small fields with protobuf and give the
data field as a view of the received message's bytes: no copy at all. Anything but the
one expected field layout (a header, repeated or unknown outer fields, groups, a cut
message) is parsed by protobuf itself, which accepts or refuses it as it always did.
"""

from __future__ import annotations

from typing import Any, cast

from fedge.protos import fedge_pb2

# Tags (field number << 3 | wire type 2, length-delimited) of the fields written here.
_MODEL_CHUNK_DATA = bytes([3 << 3 | 2])
_TENSOR_CHUNK_DATA = bytes([5 << 3 | 2])
_UPDATE_CHUNK_TENSOR = bytes([2 << 3 | 2])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def model_chunk(version: int, offset: int, data: bytes | memoryview, total_size: int,
                sha256: str) -> bytes:
    """A serialized ModelChunk (data may be a view: it is copied once, here)."""
    head = fedge_pb2.ModelChunk(model_version=version, offset=offset, total_size=total_size,
                                sha256=sha256).SerializeToString()
    return b"".join((head, _MODEL_CHUNK_DATA, _varint(len(data)), data))


def update_tensor_chunk(name: str, dtype: str, shape: tuple[int, ...], offset: int,
                        data: bytes | memoryview, crc32: int | None = None) -> bytes:
    """A serialized UpdateChunk holding one TensorChunk (data copied once, here); crc32
    None leaves the field out (a server that sets JoinReply.update_crc_optional)."""
    head = fedge_pb2.TensorChunk(name=name, dtype=dtype, shape=shape, offset=offset,
                                 crc32=crc32).SerializeToString()
    data_tag = _TENSOR_CHUNK_DATA + _varint(len(data))
    inner = len(head) + len(data_tag) + len(data)
    return b"".join((_UPDATE_CHUNK_TENSOR, _varint(inner), head, data_tag, data))


def passthrough(message: Any) -> bytes:
    """gRPC serializer: bytes serialized here as they are, messages by protobuf."""
    if isinstance(message, bytes):
        return message
    return bytes(message.SerializeToString())


# ------------------------------------------------------------------ receiving side

class _Irregular(Exception):
    """A message outside the one layout parsed here: protobuf parses it instead."""


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Irregular
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _split(buf: memoryview, data_field: int) -> tuple[bytes, memoryview | None]:
    """buf's fields other than data_field, serialized again (small), and the last
    data_field's bytes (protobuf: the last one of a non-repeated field wins), a view."""
    rest: list[memoryview] = []
    data = None
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _read_varint(buf, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            size, pos = _read_varint(buf, pos)
            if field == data_field:
                data = buf[pos : pos + size]
            pos += size
        else:  # groups (3, 4) and invalid wire types
            raise _Irregular
        if pos > len(buf):
            raise _Irregular
        if not (field == data_field and wire_type == 2):
            rest.append(buf[start:pos])
    return b"".join(rest), data


class TensorChunkView:
    """A TensorChunk whose data is a view of the received bytes (read-only): the small
    fields are a parsed fedge_pb2.TensorChunk, HasField is its."""

    __slots__ = ("_small", "data")

    def __init__(self, small: fedge_pb2.TensorChunk, data: memoryview) -> None:
        self._small, self.data = small, data

    name = property(lambda self: self._small.name)
    dtype = property(lambda self: self._small.dtype)
    shape = property(lambda self: self._small.shape)
    offset = property(lambda self: self._small.offset)
    crc32 = property(lambda self: self._small.crc32)

    def HasField(self, field: str) -> bool:
        """Whether the chunk carried field (crc32: whether it was sent at all)."""
        return bool(self._small.HasField(field))


class UpdateChunkView:
    """An UpdateChunk holding one tensor chunk, parsed by :func:`parse_update_chunk`."""

    __slots__ = ("_size", "tensor")

    def __init__(self, tensor: TensorChunkView, size: int) -> None:
        self.tensor, self._size = tensor, size

    def WhichOneof(self, group: str) -> str:
        """The payload it carries: a tensor chunk."""
        if group != "payload":
            raise ValueError(f"UpdateChunk has no oneof {group!r}")
        return "tensor"

    def ByteSize(self) -> int:
        """Its bytes on the wire."""
        return self._size


def parse_update_chunk(raw: bytes) -> fedge_pb2.UpdateChunk:
    """gRPC deserializer of SubmitUpdate: an UpdateChunk that is one tensor chunk
    becomes an UpdateChunkView (its data not copied), anything else is protobuf's."""
    buf = memoryview(raw)
    try:
        key, pos = _read_varint(buf, 0)
        size, pos = _read_varint(buf, pos)
        if key != _UPDATE_CHUNK_TENSOR[0] or pos + size != len(buf):
            raise _Irregular  # a header, or more than the one tensor field
        small, data = _split(buf[pos:], 5)
        tensor = TensorChunkView(fedge_pb2.TensorChunk.FromString(small),
                                 data if data is not None else memoryview(b""))
    except _Irregular:
        return fedge_pb2.UpdateChunk.FromString(raw)
    # Typed as the message it stands for: the server reads the same attributes of both.
    return cast(fedge_pb2.UpdateChunk, UpdateChunkView(tensor, len(raw)))


class ModelChunkView:
    """A ModelChunk whose data is a view of the received bytes (read-only)."""

    __slots__ = ("_small", "data")

    def __init__(self, small: fedge_pb2.ModelChunk, data: memoryview) -> None:
        self._small, self.data = small, data

    def ByteSize(self) -> int:
        """About its bytes on the wire (the data field's tag and length aside), as a
        ModelChunk answers: a simulated link paces fetches by it."""
        return len(self.data) + int(self._small.ByteSize())

    model_version = property(lambda self: self._small.model_version)
    offset = property(lambda self: self._small.offset)
    total_size = property(lambda self: self._small.total_size)
    sha256 = property(lambda self: self._small.sha256)


def parse_model_chunk(raw: bytes) -> fedge_pb2.ModelChunk:
    """gRPC deserializer of FetchModel on the device: a ModelChunkView (data not
    copied), or protobuf's message for anything irregular."""
    try:
        small, data = _split(memoryview(raw), 3)
        view = ModelChunkView(fedge_pb2.ModelChunk.FromString(small),
                              data if data is not None else memoryview(b""))
    except _Irregular:
        return fedge_pb2.ModelChunk.FromString(raw)
    return cast(fedge_pb2.ModelChunk, view)
