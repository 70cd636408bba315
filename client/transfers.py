"""Moving models and updates between the daemon and the server.

Downloads resume from the last byte received when a stream breaks, and end with the
whole blob checked against its SHA-256. An update goes up as one stream (the header,
then tensor chunks of at most 1 MiB) and is sent again only while the server's refusal
allows it (``Refusal.resend``: the server is busy or away) and the round's deadline is
not past; a refusal of what was sent (too large, damaged, invalid) is final. A resent
update starts at the byte the server says it kept of a broken stream (``UploadOffset``),
so a link cut at half way costs half an update, not a whole one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import numpy as np

from fedge.chunk_wire import parse_model_chunk, passthrough, update_tensor_chunk
from fedge.client.channel import refusal_of
from fedge.client.session import Session
from fedge.errors import FedgeError
from fedge.protos import fedge_pb2, fedge_pb2_grpc
from fedge.tensors import Spec, TensorError, fingerprint, from_blob, iter_pieces

log = logging.getLogger(__name__)
T = TypeVar("T")

DOWNLOAD_ATTEMPTS = 5  # a stream broken this often is the loop's problem (it rejoins)
UPLOAD_ATTEMPTS = 8  # sends of one update at most, however far off the deadline
OFFSET_ASKS = 8  # asks for a broken upload's offset while the server still reads it


def download(session: Session, version: int, artifact: bool = False,
             into: bytearray | None = None) -> bytearray:
    """A model version's blob (or the edge artifact built from it), resuming from the
    last byte on a broken stream; FedgeError if it arrives damaged. Chunks are copied
    once, into one buffer of the announced size (no list of parts joined at the end:
    that would hold the model twice).

    into: a buffer nothing else uses any more (a previous download), overwritten when
    it is of the announced size. Writing memory the process already holds is several
    times faster than the first touch of a fresh buffer's pages: on the VMs measured
    in BENCHMARKS.md, 0.75 s per GB, about what the whole raw stream takes."""
    # SHA-256 on a thread of its own (hashlib lets go of the GIL), in chunk order, of the
    # blob's bytes once stored: hashing a chunk overlaps receiving and storing the next.
    with ThreadPoolExecutor(1, thread_name_prefix="fedge-sha256") as hasher:
        digest = hashlib.sha256()
        blob, received, total, sha = _fetch(session, version, artifact, hasher, digest,
                                            into)
    if received != total or len(blob) != total or digest.hexdigest() != sha:
        raise FedgeError(f"model version {version} arrived damaged: {received} of "
                         f"{total} bytes, SHA-256 mismatch")
    return blob


def _fetch(session: Session, version: int, artifact: bool, hasher: ThreadPoolExecutor,
           digest: Any, into: bytearray | None) -> tuple[bytearray, int, int, str]:
    """download's stream loop: the blob, the bytes received, the announced size and
    SHA-256; each stored chunk handed to hasher to add to digest."""
    blob = bytearray()
    received, total, sha = 0, -1, ""
    for attempt in range(DOWNLOAD_ATTEMPTS):
        request = fedge_pb2.FetchRequest(session_id=session.id, model_version=version,
                                         offset=received, artifact=artifact)
        try:
            for chunk in session.stub.FetchModel(request, timeout=300):
                if chunk.offset != received:
                    raise FedgeError(f"model stream jumped to byte {chunk.offset}, "
                                     f"expected {received}")
                total, sha = chunk.total_size, chunk.sha256
                data = chunk.data  # once: a protobuf message copies it on every read
                end = received + len(data)
                if not 0 <= end <= total:
                    raise FedgeError(f"model stream runs past its {total} bytes")
                if len(blob) != total:  # the first chunk says how large the blob is
                    blob = into if into is not None and len(into) == total else (
                        bytearray(total))
                blob[received:end] = data
                hasher.submit(digest.update, memoryview(blob)[received:end])
                received = end
            break
        except grpc.RpcError as exc:
            if not refusal_of(exc).resend or attempt == DOWNLOAD_ATTEMPTS - 1:
                raise
            log.warning("%s: model download broke at byte %d (%s); resuming",
                        session.device_id, received, refusal_of(exc))
            session.link.pause(session.link.backoff.next_delay())
    return blob, received, total, sha


def decode_weights(blob: bytes | bytearray, version: int, specs: list[Spec],
                   task: str) -> dict[str, np.ndarray]:
    """A downloaded model version's weights, views of blob's memory (a bytearray's are
    writable); FedgeError unless they fit the task."""
    try:
        arrays, _ = from_blob(blob, copy=False)
    except TensorError as exc:
        raise FedgeError(f"model version {version} does not decode: {exc}") from exc
    if fingerprint(arrays) != specs:
        raise FedgeError(f"model version {version} does not fit task {task}")
    return arrays


def update_stream(header: fedge_pb2.UpdateHeader, weights: dict[str, np.ndarray],
                  crc: bool = True) -> Iterator[fedge_pb2.UpdateChunk | bytes]:
    """The messages of one upload: the header, then the tensors' chunks from the
    header's resume_offset on, serialized by hand (fedge.chunk_wire: FastStub sends
    them as they are); crc: give each chunk a CRC-32 (a server that does not set
    JoinReply.update_crc_optional refuses a chunk without one)."""
    yield fedge_pb2.UpdateChunk(header=header)
    for p in iter_pieces(weights, start=header.resume_offset, crc=crc):
        yield update_tensor_chunk(p.name, p.dtype, p.shape, p.offset, p.data, p.crc32)


class FastStub(fedge_pb2_grpc.FederationStub):
    """The Federation stub, sending an update's hand-serialized chunks as they are and
    reading a model's chunks without copying their data (fedge.chunk_wire)."""

    def __init__(self, channel: grpc.Channel) -> None:
        super().__init__(channel)
        self.FetchModel = channel.unary_stream(
            "/fedge.v1.Federation/FetchModel",
            request_serializer=fedge_pb2.FetchRequest.SerializeToString,
            response_deserializer=parse_model_chunk)
        self.SubmitUpdate = channel.stream_unary(
            "/fedge.v1.Federation/SubmitUpdate", request_serializer=passthrough,
            response_deserializer=fedge_pb2.SubmitReply.FromString)


def upload_offset(session: Session, header: fedge_pb2.UpdateHeader, total: int) -> int:
    """Where a broken upload of this update (total data bytes) resumes: the bytes the
    server kept of it (0 when it kept none, or is too old to say)."""
    request = fedge_pb2.UploadOffsetRequest(session_id=session.id, task_id=header.task_id,
                                            sha256=header.sha256)
    for _ in range(OFFSET_ASKS):
        try:
            offset = int(session.stub.UploadOffset(request, timeout=30).offset)
            return offset if 0 <= offset <= total else 0
        except grpc.RpcError as exc:
            refusal = refusal_of(exc)
            if refusal.name != "upload_in_progress":
                log.info("%s: no resume offset for the update (%s); sending it whole",
                         session.device_id, refusal)
                return 0
            # The server has not yet seen the broken stream end: ask again shortly.
            session.link.pause(session.link.backoff.next_delay())
    return 0


def with_resends(session: Session, round_: int, what: str, deadline: float,
                 send: Callable[[int], T]) -> T:
    """send(attempt) until it returns; after a refusal that allows it, again after a
    backoff, while the deadline (unix seconds) is not reached and fewer than
    UPLOAD_ATTEMPTS were made. Raises the last grpc.RpcError otherwise."""
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            result = send(attempt)
            session.link.backoff.reset()
            return result
        except grpc.RpcError as exc:
            refusal = refusal_of(exc)
            delay = session.link.backoff.next_delay()
            if (not refusal.resend or time.time() + delay > deadline
                    or attempt == UPLOAD_ATTEMPTS):
                raise
            log.info("%s: round %d %s not taken (%s); resending in %.1f s",
                     session.device_id, round_, what, refusal, delay)
            session.link.pause(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def submit(session: Session, header: fedge_pb2.UpdateHeader,
           weights: dict[str, np.ndarray], deadline: float) -> fedge_pb2.SubmitReply:
    """Sends the update, resent as with_resends allows (a resent copy of an accepted
    update is answered, not folded twice). A resend goes on from the bytes the server
    kept of a broken stream. Raises the last grpc.RpcError otherwise."""
    total = sum(int(a.nbytes) for a in weights.values())

    def send(attempt: int) -> fedge_pb2.SubmitReply:
        if attempt > 1:  # the server may hold the part a broken stream carried
            header.resume_offset = upload_offset(session, header, total)
        reply: fedge_pb2.SubmitReply = session.stub.SubmitUpdate(
            update_stream(header, weights, not session.crc_optional), timeout=600)
        return reply

    return with_resends(session, header.round, "update", deadline, send)
