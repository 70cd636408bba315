"""The gRPC face of the server, and the one place our errors become status codes.

Handlers convert wire messages to our types at once, call the registry and the round
state machine, and count the bytes that cross the wire for the round in progress.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from fedge.tensors import CHUNK_BYTES, Spec, TensorAssembler, TensorError, specs_from_proto
from protos import fedge_pb2, fedge_pb2_grpc
from server.errors import InvalidRequest, Refused, StaleRequest, UnknownSession, Unsupported
from server.registry import Registry
from server.rounds import Rounds, TaskView
from server.store import StateStore

log = logging.getLogger(__name__)

STATUS: dict[type[Exception], grpc.StatusCode] = {
    UnknownSession: grpc.StatusCode.NOT_FOUND,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    TensorError: grpc.StatusCode.INVALID_ARGUMENT,
    StaleRequest: grpc.StatusCode.FAILED_PRECONDITION,
    Unsupported: grpc.StatusCode.UNIMPLEMENTED,
}
FRAME = 5  # gRPC's length-prefixed message framing: 1 flag byte + 4 length bytes

F = TypeVar("F", bound=Callable[..., Any])


def _status_boundary(method: F) -> F:
    """Turns our refusals into gRPC statuses with the refusal's message."""

    @functools.wraps(method)
    def wrapper(self: FederationService, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except (Refused, TensorError) as exc:
            code = next(c for t, c in STATUS.items() if isinstance(exc, t))
            log.info("%s refused (%s): %s", method.__name__, code.name, exc)
            context.abort(code, str(exc))

    return wrapper  # type: ignore[return-value]


def _size(message: Any) -> int:
    return int(message.ByteSize()) + FRAME


class FederationService(fedge_pb2_grpc.FederationServicer):
    """fedge.v1.Federation over a Registry and a Rounds state machine."""

    def __init__(self, task_name: str, specs: list[Spec], registry: Registry, rounds: Rounds,
                 store: StateStore, poll_seconds: float, max_update_bytes: int) -> None:
        self._task_name = task_name
        self._specs = specs
        self._registry = registry
        self._rounds = rounds
        self._store = store
        self._poll_seconds = poll_seconds
        self._max_update_bytes = max_update_bytes

    @_status_boundary
    def Join(self, request: fedge_pb2.JoinRequest,
             context: grpc.ServicerContext) -> fedge_pb2.JoinReply:
        self._rounds.count_bytes(up=_size(request))
        if not request.device_id:
            raise InvalidRequest("device_id must not be empty")
        if request.task != self._task_name:
            raise InvalidRequest(f"this server runs task {self._task_name!r}, the device "
                                 f"runs {request.task!r}")
        theirs = specs_from_proto(request.fingerprint)
        if theirs != self._specs:
            diff = next((f"{a} != {b}" for a, b in zip(theirs, self._specs, strict=False)
                         if a != b), f"{len(theirs)} tensors != {len(self._specs)}")
            raise InvalidRequest(f"the device's model does not match task "
                                 f"{self._task_name!r}: {diff}")
        caps = request.capabilities
        device = self._registry.join(
            request.device_id, request.num_examples,
            {"accelerator": caps.accelerator, "platform": caps.platform,
             "runtime": caps.runtime, "memory_bytes": str(caps.memory_bytes)})
        log.info("device %s joined (%s, %d examples)", device.device_id,
                 caps.accelerator or "unknown accelerator", request.num_examples)
        reply = fedge_pb2.JoinReply(session_id=device.session_id,
                                    round=self._rounds.model_version + 1,
                                    model_version=self._rounds.model_version,
                                    poll_seconds=self._poll_seconds)
        self._rounds.count_bytes(down=_size(reply))
        return reply

    @_status_boundary
    def PollTask(self, request: fedge_pb2.PollRequest,
                 context: grpc.ServicerContext) -> fedge_pb2.Task:
        self._rounds.count_bytes(up=_size(request))
        device = self._registry.get(request.session_id)
        wait = request.wait_seconds if request.wait_seconds > 0 else self._poll_seconds
        view = self._rounds.poll(device, min(wait, self._poll_seconds))
        reply = self._task_message(view)
        self._rounds.count_bytes(down=_size(reply))
        return reply

    def _task_message(self, view: TaskView) -> fedge_pb2.Task:
        kind = view.kind  # protobuf takes an enum's name
        a = view.assignment
        if a is None:
            return fedge_pb2.Task(kind=kind, model_version=view.model_version,
                                  retry_after_seconds=view.retry_after_s, message=view.message,
                                  artifact_sha256=view.artifact_sha256)
        s = self._rounds.settings
        train = fedge_pb2.TrainConfig(
            epochs=s.epochs, lr=s.lr, batch_size=s.batch_size,
            update_kind=fedge_pb2.WEIGHTS, encoding=fedge_pb2.F32,
            seed=s.seed * 1_000_003 + a.round)
        return fedge_pb2.Task(kind=kind, task_id=a.task_id, round=a.round,
                              model_version=view.model_version, train=train,
                              deadline_unix=a.deadline)

    @_status_boundary
    def FetchModel(self, request: fedge_pb2.FetchRequest,
                   context: grpc.ServicerContext) -> Iterator[fedge_pb2.ModelChunk]:
        self._rounds.count_bytes(up=_size(request))
        self._registry.get(request.session_id)
        if request.artifact:  # the packed edge artifact, resumable like the weights
            blob, sha = self._rounds.artifact_blob(request.model_version)
        else:
            blob, sha = self._rounds.model_blob(request.model_version)
        if not 0 <= request.offset <= len(blob):
            raise InvalidRequest(f"offset {request.offset} is outside the {len(blob)}-byte "
                                 "model")
        return self._model_chunks(request.model_version, blob, sha, request.offset)

    def _model_chunks(self, version: int, blob: bytes, sha: str,
                      offset: int) -> Iterator[fedge_pb2.ModelChunk]:
        view = memoryview(blob)
        sent = 0
        try:
            while True:
                data = bytes(view[offset : offset + CHUNK_BYTES])
                chunk = fedge_pb2.ModelChunk(model_version=version, offset=offset, data=data,
                                             total_size=len(blob), sha256=sha)
                sent += _size(chunk)
                yield chunk
                offset += len(data)
                if offset >= len(blob):
                    return
        finally:  # counted once per stream, broken streams included
            self._rounds.count_bytes(down=sent)

    @_status_boundary
    def SubmitUpdate(self, request_iterator: Iterator[fedge_pb2.UpdateChunk],
                     context: grpc.ServicerContext) -> fedge_pb2.SubmitReply:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidRequest("an update stream must start with an UpdateHeader")
        self._rounds.count_bytes(up=_size(first))
        header = first.header
        device = self._registry.get(header.session_id)
        if header.kind not in (fedge_pb2.WEIGHTS, fedge_pb2.UPDATE_KIND_UNSPECIFIED):
            raise Unsupported("this server aggregates WEIGHTS updates only")
        if header.encoding not in (fedge_pb2.F32, fedge_pb2.ENCODING_UNSPECIFIED):
            raise Unsupported("this server accepts F32-encoded updates only")
        assignment = self._rounds.check_submission(device, header.task_id, header.round,
                                                   header.num_examples)
        assembler = TensorAssembler(self._specs, self._max_update_bytes)
        received = 0
        try:
            for message in request_iterator:
                received += _size(message)
                if message.WhichOneof("payload") != "tensor":
                    raise InvalidRequest("only tensor chunks may follow the header")
                assembler.add(message.tensor)
        finally:  # counted once per stream, refused streams included
            self._rounds.count_bytes(up=received)
        arrays = assembler.finish()
        self._rounds.accept(assignment, arrays, header.num_examples)
        if header.metrics:
            self._store.add_metrics(header.round, device.device_id, "train",
                                    dict(header.metrics))
        reply = fedge_pb2.SubmitReply(accepted=True, message="update accepted")
        self._rounds.count_bytes(down=_size(reply))
        return reply

    @_status_boundary
    def ReportMetrics(self, request: fedge_pb2.MetricsReport,
                      context: grpc.ServicerContext) -> fedge_pb2.MetricsReply:
        self._rounds.count_bytes(up=_size(request))
        device = self._registry.get(request.session_id)
        self._store.add_metrics(request.round, device.device_id, "device",
                                dict(request.metrics))
        reply = fedge_pb2.MetricsReply()
        self._rounds.count_bytes(down=_size(reply))
        return reply
