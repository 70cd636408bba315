"""The gRPC face of the server, and the one place our refusals become status codes.

Handlers authenticate, convert wire messages to our types at once, call the registry and
the round state machine, and count the bytes that cross the wire for the round in
progress. An update's header is read here; its stream goes through the intake pipeline
(fedge.server.intake) and into the round. Any refusal raised on the way reaches
:func:`_status_boundary`, which sends its rule's status and its name (trailing metadata
``fedge-refusal``); a refusal whose rule settles the task settles it first.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import functools
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from fedge.errors import FedgeError
from fedge.protos import fedge_pb2, fedge_pb2_grpc
from fedge.refusals import (
    METADATA_KEY,
    InvalidRequest,
    PermissionDenied,
    Refused,
    StaleRequest,
    Unauthenticated,
    Unsupported,
    quote,
)
from fedge.server import secure_service as secure
from fedge.server.admission import (
    AddressSeats,
    Guards,
    StreamWatch,
    Watched,
    admitted_chunks,
    check_num_tensors,
)
from fedge.server.downloads import model_chunks
from fedge.server.fields import check_fingerprint, check_join, check_report, check_update_header
from fedge.server.intake import Expected
from fedge.server.limits import CallLimits, UploadSlots, peer_host
from fedge.server.partial_uploads import PartialUploads, accept_update, spool_for
from fedge.server.registry import Device, Registry
from fedge.server.relays import check_relay
from fedge.server.rounds import AlreadyAccepted, Assignment, Rounds
from fedge.server.side_tasks import (
    edge_report,
    holdout_of,
    operate_rollout,
    report_evaluation,
)
from fedge.server.status import to_proto
from fedge.server.store import StateStore
from fedge.server.task_message import task_message
from fedge.server.tokens import TokenStore, check_device_id, hash_token
from fedge.tensors import Spec, specs_from_proto

log = logging.getLogger(__name__)

TOKEN_HEADER = "authorization"  # value: "Bearer <token>"


@dataclass(frozen=True)
class Caller:
    """Who a request's token belongs to."""

    name: str
    role: str  # "device" or "operator"


# The authenticated caller of the request being handled (None: anonymous).
_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


FRAME = 5  # gRPC's length-prefixed message framing: 1 flag byte + 4 length bytes

F = TypeVar("F", bound=Callable[..., Any])


def _status_boundary(method: F) -> F:
    """Turns our refusals into gRPC statuses with the refusal's message."""

    @functools.wraps(method)
    def wrapper(self: FederationService, request: Any, context: grpc.ServicerContext) -> Any:
        reset = None
        try:
            reset = _caller.set(self._authenticate(context))
            return method(self, request, context)
        except Refused as refusal:
            code = grpc.StatusCode[refusal.rule.status]
            self._count_refusal(method.__name__, code)
            context.set_trailing_metadata(((METADATA_KEY, refusal.name),))
            log.warning("%s refused (%s, %s): %s", method.__name__, code.name, refusal.name,
                        refusal,
                        extra={"event": "request.refused", "method": method.__name__,
                               "status": code.name})
            context.abort(code, str(refusal))
        finally:
            if reset is not None:
                _caller.reset(reset)

    return wrapper  # type: ignore[return-value]


def _operator(what: str, alternative: str = "") -> None:
    """Refuses a caller without an operator token."""
    caller = _caller.get()
    if caller is None or caller.role != "operator":
        raise PermissionDenied(f"{what} is for operators: create a token with `fedge tokens "
                               f"create --role operator`{alternative}")


def _size(message: Any) -> int:
    return int(message.ByteSize()) + FRAME


class FederationService(fedge_pb2_grpc.FederationServicer):
    """fedge.v1.Federation over a Registry and a Rounds state machine."""

    def __init__(self, task_name: str, specs: list[Spec], registry: Registry, rounds: Rounds,
                 store: StateStore, poll_seconds: float, max_update_bytes: int,
                 tokens: TokenStore | None = None, guards: Guards | None = None) -> None:
        self._task_name = task_name
        self._specs = specs
        self._registry = registry
        self._rounds = rounds
        self._store = store
        self._poll_seconds = poll_seconds
        self._tokens = tokens
        self._guards = guards or Guards(allow_anonymous=tokens is None)
        self._uploads = UploadSlots(self._guards.max_uploads)
        self.partials = PartialUploads(self._guards.partial_upload_bytes,
                                       self._guards.partial_upload_ttl_s,
                                       spool=spool_for(rounds, self._guards))
        self._rate = CallLimits(self._guards.rate_limit, self._guards.rate_burst)
        self._polls = threading.BoundedSemaphore(self._guards.max_polls)
        self.watch = StreamWatch(self._guards.stream_idle_s, self._guards.stream_max_s)
        self._seats = AddressSeats(self._guards.anonymous_per_address, registry.timeout)
        self._counts_lock = threading.Lock()
        self.refusals: collections.Counter[tuple[str, str]] = collections.Counter()
        self.edge_installed = 0  # edge artifacts devices reported installed (under the lock)
        settings = rounds.settings
        self._expected = Expected(tuple(specs), settings.encoding, settings.topk_fraction,
                                  max_update_bytes)
        self.status: Callable[[int], dict[str, Any]] | None = None  # the server sets it

    # ------------------------------------------------------------------ identity
    def close(self) -> None:
        """Stops the stream watch (the server is shutting down)."""
        self.watch.close()

    def _authenticate(self, context: grpc.ServicerContext) -> Caller | None:
        """The caller from its token (None: anonymous), rate-limited before any work
        (see CallLimits)."""
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_HEADER and isinstance(value, str):
                token = value.removeprefix("Bearer ").strip()
        address = f"peer {peer_host(context.peer())}"
        if not token:
            self._rate.without_token(address)
            if not self._guards.allow_anonymous:
                raise Unauthenticated("no device token: give the daemon --token or "
                                      "FEDGE_TOKEN (from `fedge tokens create`)")
            return None
        self._rate.before_lookup(hash_token(token), address)
        try:
            if self._tokens is None:
                raise Unauthenticated("this server has no device tokens (it runs with "
                                      "--allow-anonymous only); drop --token")
            return Caller(*self._tokens.identify(token))
        except Unauthenticated:
            self._rate.failed_lookup(address)
            raise

    @staticmethod
    def _device_caller() -> str | None:
        """The calling device's id (None: anonymous); operators may not act as devices."""
        caller = _caller.get()
        if caller is None:
            return None
        if caller.role != "device":
            raise PermissionDenied(f"{caller.name!r} holds an operator token, which cannot "
                                   "act as a device")
        return caller.name

    def _device(self, session_id: str) -> Device:
        """The session's device, if the caller may act for it."""
        caller = self._device_caller()
        device = self._registry.get(session_id)
        if caller is not None and device.device_id != caller:
            raise PermissionDenied(f"this token belongs to device {caller!r}, not to the "
                                   "device holding this session")
        if caller is None and device.authenticated:
            raise PermissionDenied("this session belongs to an enrolled device; send its "
                                   "token")
        return device

    def _count_refusal(self, method: str, code: grpc.StatusCode) -> None:
        with self._counts_lock:
            self.refusals[(method, code.name)] += 1

    @_status_boundary
    def Join(self, request: fedge_pb2.JoinRequest,
             context: grpc.ServicerContext) -> fedge_pb2.JoinReply:
        self._rounds.count_bytes(up=_size(request))
        if not request.device_id:
            raise InvalidRequest("device_id must not be empty")
        caller = self._device_caller()
        if caller is not None and caller != request.device_id:
            raise PermissionDenied(f"this token belongs to device {caller!r}, not "
                                   f"{quote(request.device_id)}")
        try:
            check_device_id(request.device_id)
        except FedgeError as exc:
            raise InvalidRequest(str(exc)) from None
        check_join(request, self._rounds.settings.max_examples)
        check_relay(request.relay, self._rounds.strategy, self._rounds.settings)
        if request.task != self._task_name:
            raise InvalidRequest(f"this server runs task {self._task_name!r}, the device "
                                 f"runs {request.task!r}")
        if not request.inference_only:  # it has no model to fingerprint: never sampled
            check_fingerprint(specs_from_proto(request.fingerprint), self._specs,
                              self._task_name)
        address = peer_host(context.peer())
        if caller is None:  # one host must not pass for a crowd
            self._seats.check(address, request.device_id)
        caps = request.capabilities
        deploy = self._rounds.deploy  # a device's class picks its edge artifact
        device_class = (deploy.classify(caps.memory_bytes, caps.accelerator,
                                        request.device_class) if deploy is not None else "")
        device = self._registry.join(
            request.device_id, request.num_examples,
            {"accelerator": caps.accelerator, "platform": caps.platform,
             "runtime": caps.runtime, "memory_bytes": str(caps.memory_bytes)},
            authenticated=caller is not None, previous_session=request.previous_session,
            inference_only=request.inference_only)
        device.device_class, device.personalize = device_class, request.personalize
        if caller is None:
            self._seats.seat(address, device)
        log.info("device %s joined (%s, %d examples)%s", device.device_id,
                 caps.accelerator or "unknown accelerator", request.num_examples,
                 ", inference-only" if request.inference_only else "",
                 extra={"event": "device.joined", "device": device.device_id})
        reply = fedge_pb2.JoinReply(session_id=device.session_id,
                                    round=self._rounds.model_version + 1,
                                    model_version=self._rounds.model_version,
                                    poll_seconds=self._poll_seconds,
                                    holdout_fraction=holdout_of(self._rounds),
                                    update_crc_optional=True,
                                    secure_rounds=self._rounds.settings.secure)
        self._rounds.count_bytes(down=_size(reply))
        return reply

    @_status_boundary
    def PollTask(self, request: fedge_pb2.PollRequest,
                 context: grpc.ServicerContext) -> fedge_pb2.Task:
        self._rounds.count_bytes(up=_size(request))
        device = self._device(request.session_id)
        device.polled = True  # it is there: it may be sampled
        secure.record_advert(self._rounds, device, request)  # secure runs: its next keys
        wait = request.wait_seconds if request.wait_seconds > 0 else self._poll_seconds
        if self._polls.acquire(blocking=False):
            try:
                view = self._rounds.poll(device, min(wait, self._poll_seconds))
            finally:
                self._polls.release()
        else:
            # Every long-poll slot is taken: holding this one too would starve joins,
            # fetches and uploads of worker threads. Answer now; the jitter spreads the
            # retries of a large fleet over the poll period.
            view = self._rounds.poll(device, 0.0)
            if view.kind == "WAIT":
                view = dataclasses.replace(
                    view, retry_after_s=self._poll_seconds * random.uniform(0.25, 0.75))
        reply = task_message(view, self._rounds.settings,
                             self._rounds.strategy.client_config(),
                             self._rounds.current.secure)
        self._rounds.count_bytes(down=_size(reply))
        return reply

    @_status_boundary
    def FetchModel(self, request: fedge_pb2.FetchRequest,
                   context: grpc.ServicerContext) -> Iterator[bytes]:
        self._rounds.count_bytes(up=_size(request))
        device = self._device(request.session_id)
        if request.artifact:  # the packed edge artifact of its class, resumable too
            blob, sha = self._rounds.artifact_blob(request.model_version, device.device_class)
        else:
            blob, sha = self._rounds.model_blob(request.model_version)
        if not 0 <= request.offset <= len(blob):
            raise InvalidRequest(f"offset {request.offset} is outside the {len(blob)}-byte "
                                 "model")
        return model_chunks(request.model_version, blob, sha, request.offset,
                            self.watch.watch(context, "model download"),
                            self._rounds.count_bytes)

    @_status_boundary
    def SubmitUpdate(self, request_iterator: Iterator[fedge_pb2.UpdateChunk],
                     context: grpc.ServicerContext) -> fedge_pb2.SubmitReply:
        # Admission before resources: the stream is on the clock from its first byte,
        # an enrolled device has one stream at a time from its first byte (an anonymous
        # one from its header), and the stream takes one of the server's upload slots
        # only once its header, session and task check out.
        caller = self._device_caller()
        with self.watch.watch(context, "update stream") as watched, \
                self._uploads.device(caller) if caller else contextlib.nullcontext():
            return self._receive_update(watched.messages(request_iterator), context,
                                        watched, anonymous=caller is None)

    def _receive_update(self, messages: Iterator[fedge_pb2.UpdateChunk],
                        context: grpc.ServicerContext, watched: Watched,
                        anonymous: bool) -> fedge_pb2.SubmitReply:
        first = next(messages, None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidRequest("an update stream must start with an UpdateHeader")
        self._rounds.count_bytes(up=_size(first))
        header = first.header
        device = self._device(header.session_id)
        metrics = check_update_header(header, self._rounds.settings,
                                      self._rounds.model_version)
        assignment: Assignment | None = None  # the task, once check_submission found it
        try:
            assignment = self._rounds.check_submission(device, header.task_id, header.round,
                                                       header.num_examples, header.sha256)
            if len(header.sha256) != 64:  # after the task: a stale one is said to be stale
                raise InvalidRequest("the update header must carry the SHA-256 of its "
                                     "stream")
            wire = self._expected.wire
            check_num_tensors(header.num_tensors, wire)
            watched.end_by(assignment.deadline, f"round {assignment.round}'s deadline passed")
            with (self._uploads.device(device.device_id) if anonymous
                  else contextlib.nullcontext()), self._uploads.hold():
                chunks = admitted_chunks(self._tensor_chunks(messages), wire)
                arrays = self.partials.receive(device.device_id, header, chunks,
                                               self._expected, assignment.deadline,
                                               watched.hung_up)
            watched.finish()  # all read: the fold's time is not the device's
            accept_update(self._rounds, assignment, arrays, header.num_examples, header.sha256)
        except AlreadyAccepted:
            log.info("round %d: %s resent its accepted update; ignored", header.round,
                     device.device_id)
            return fedge_pb2.SubmitReply(accepted=True, message="already accepted; the "
                                         "resent copy was ignored")
        except Refused as refusal:
            # The table: the device will not send it again, so the round stops waiting.
            # A stream that ended because its device hung up (the call is no longer
            # active) is not the device's final word: it may resend after reconnecting.
            if refusal.rule.settles and assignment is not None and context.is_active():
                self._rounds.refuse(assignment, str(refusal))
            raise
        if metrics:
            self._store.add_metrics(header.round, device.device_id, "train", metrics)
        reply = fedge_pb2.SubmitReply(accepted=True, message="update accepted")
        self._rounds.count_bytes(down=_size(reply))
        return reply

    def _tensor_chunks(self, request_iterator: Iterator[fedge_pb2.UpdateChunk],
                       ) -> Iterator[fedge_pb2.TensorChunk]:
        """The tensor chunks that follow the header, their wire bytes counted."""
        received = 0
        try:
            for message in request_iterator:
                received += _size(message)
                if message.WhichOneof("payload") != "tensor":
                    raise InvalidRequest("only tensor chunks may follow the header")
                yield message.tensor
        finally:  # counted once per stream, refused streams included
            self._rounds.count_bytes(up=received)

    @_status_boundary
    def UploadOffset(self, request: fedge_pb2.UploadOffsetRequest,
                     context: grpc.ServicerContext) -> fedge_pb2.UploadOffsetReply:
        device = self._device(request.session_id)
        with self._uploads.device(device.device_id):  # a broken stream not yet put away
            pass
        return fedge_pb2.UploadOffsetReply(offset=self.partials.offset(
            device.device_id, request.task_id, request.sha256))

    @_status_boundary
    def SecureStep(self, request: fedge_pb2.SecureRequest,
                   context: grpc.ServicerContext) -> fedge_pb2.SecureReply:
        self._rounds.count_bytes(up=_size(request))
        reply = secure.secure_step(self._rounds, self._device(request.session_id), request)
        self._rounds.count_bytes(down=_size(reply))
        return reply

    @_status_boundary
    def SubmitMasked(self, request_iterator: Iterator[fedge_pb2.MaskedChunk],
                     context: grpc.ServicerContext) -> fedge_pb2.SubmitReply:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidRequest("a masked input must start with a MaskedHeader")
        header = first.header
        device = self._device(header.session_id)
        with self._uploads.hold():
            got = secure.submit_masked(self._rounds, device, header,
                                       (m.data for m in request_iterator))
        self._rounds.count_bytes(up=_size(first) + got)  # its metrics: with the round's
        unmask = secure.unmask_after_masked(self._rounds, device, header)
        return fedge_pb2.SubmitReply(accepted=True, message="masked input added", unmask=unmask)

    @_status_boundary
    def ReportMetrics(self, request: fedge_pb2.MetricsReport,
                      context: grpc.ServicerContext) -> fedge_pb2.MetricsReply:
        self._rounds.count_bytes(up=_size(request))
        device = self._device(request.session_id)
        metrics = check_report(request, self._rounds.model_version, device.num_examples)
        if request.task_id:  # the answer to an EVALUATE task (fedge.server.fleet_eval)
            report_evaluation(self._rounds, device, request, metrics)
            return fedge_pb2.MetricsReply()
        if ("edge_installed" in metrics or "edge_refused" in metrics) and not (
                self._rounds.artifact_built(request.model_version)):
            raise StaleRequest(f"no edge artifact was built from round "
                               f"{request.model_version}")
        self._store.add_metrics(request.round, device.device_id, "device", metrics)
        if metrics.get("edge_installed"):
            device.edge_model = str(request.model_version)
            with self._counts_lock:  # handlers run on many threads
                self.edge_installed += 1
        edge_report(self._rounds, device, request.model_version, metrics)
        reply = fedge_pb2.MetricsReply()
        self._rounds.count_bytes(down=_size(reply))
        return reply

    @_status_boundary
    def Status(self, request: fedge_pb2.StatusRequest,
               context: grpc.ServicerContext) -> fedge_pb2.StatusReply:
        _operator("status", ", or read it on the server's machine with `fedge status "
                  "--state-dir`")
        if self.status is None:
            raise Unsupported("this server does not report status")
        return to_proto(self.status(request.last_rounds or 5))

    @_status_boundary
    def Rollout(self, request: fedge_pb2.RolloutRequest,
                context: grpc.ServicerContext) -> fedge_pb2.RolloutReply:
        _operator("steering a rollout")
        return operate_rollout(self._rounds, request)
