"""A model (or a packed edge artifact) streamed to a device in chunks, from any offset,
so a broken download resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from fedge.protos import fedge_pb2
from fedge.server.admission import Watched
from fedge.tensors import CHUNK_BYTES

FRAME = 5  # gRPC's length-prefixed message framing: 1 flag byte + 4 length bytes


def model_chunks(version: int, blob: bytes, sha: str, offset: int,
                 watch: AbstractContextManager[Watched],
                 count_bytes: Callable[..., None]) -> Iterator[fedge_pb2.ModelChunk]:
    """The chunks of blob from offset, under watch: a reader that takes no chunk for the
    idle limit (gRPC waits for it to make room) or reads past the stream's time limit is
    cut, and resumes from its offset. The bytes sent are counted once per stream, broken
    and cut streams included."""
    view = memoryview(blob)
    sent = 0
    try:
        with watch as watched:
            while True:
                watched.touch()
                data = bytes(view[offset : offset + CHUNK_BYTES])
                chunk = fedge_pb2.ModelChunk(model_version=version, offset=offset, data=data,
                                             total_size=len(blob), sha256=sha)
                sent += int(chunk.ByteSize()) + FRAME
                yield chunk
                offset += len(data)
                if offset >= len(blob):
                    return
    finally:
        count_bytes(down=sent)
