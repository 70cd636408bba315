"""A model (or a packed edge artifact) streamed to a device in chunks, from any offset,
so a broken download resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import grpc

from fedge.chunk_wire import model_chunk, parse_update_chunk, passthrough
from fedge.protos import fedge_pb2_grpc
from fedge.server.admission import Watched
from fedge.tensors import CHUNK_BYTES

FRAME = 5  # gRPC's length-prefixed message framing: 1 flag byte + 4 length bytes


def model_chunks(version: int, blob: bytes, sha: str, offset: int,
                 watch: AbstractContextManager[Watched],
                 count_bytes: Callable[..., None]) -> Iterator[bytes]:
    """The chunks of blob from offset, serialized ModelChunks (fedge.chunk_wire: the
    data copied once), under watch: a reader that takes no chunk for the idle limit
    (gRPC waits for it to make room) or reads past the stream's time limit is cut, and
    resumes from its offset. The bytes sent are counted once per stream, broken and cut
    streams included."""
    view = memoryview(blob)
    sent = 0
    try:
        with watch as watched:
            while True:
                watched.touch()
                data = view[offset : offset + CHUNK_BYTES]
                chunk = model_chunk(version, offset, data, len(blob), sha)
                sent += len(chunk) + FRAME
                yield chunk
                offset += len(data)
                if offset >= len(blob):
                    return
    finally:
        count_bytes(down=sent)


def add_service(service: fedge_pb2_grpc.FederationServicer, server: grpc.Server) -> None:
    """Serves service on server as the generated add_FederationServicer_to_server does,
    except that FetchModel's replies, serialized here, are sent as they are, and
    SubmitUpdate's tensor chunks are parsed without copying their data
    (fedge.chunk_wire.parse_update_chunk)."""
    recorder = _Recorder()
    fedge_pb2_grpc.add_FederationServicer_to_server(service, recorder)
    handlers = dict(recorder.handlers)
    fetch = handlers["FetchModel"]
    assert fetch.unary_stream is not None
    handlers["FetchModel"] = grpc.unary_stream_rpc_method_handler(
        fetch.unary_stream, request_deserializer=fetch.request_deserializer,
        response_serializer=passthrough)
    submit = handlers["SubmitUpdate"]
    assert submit.stream_unary is not None
    handlers["SubmitUpdate"] = grpc.stream_unary_rpc_method_handler(
        submit.stream_unary, request_deserializer=parse_update_chunk,
        response_serializer=submit.response_serializer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(recorder.name, handlers),))
    # grpc 1.62+: looked up before the generic handlers (grpc-stubs does not know it).
    server.add_registered_method_handlers(recorder.name, handlers)  # type: ignore[attr-defined]


class _Recorder:
    """Takes the generated registration's method handlers instead of a server."""

    name = ""
    handlers: dict[str, grpc.RpcMethodHandler] = {}  # noqa: RUF012

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """The generated code registers its handlers twice; the other call keeps them."""

    def add_registered_method_handlers(self, name: str,
                                       handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        """Keeps the service's name and its method handlers."""
        self.name, self.handlers = name, handlers
