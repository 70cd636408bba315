"""The gRPC handlers' side of a secure round: the keys a poll carries (stage 1:
record_advert), SecureStep (stages 2 and 4) and SubmitMasked (stage 3, whose reply may
carry stage 4's request: unmask_after_masked), on top of fedge.server.secure_round.

Every request is checked against the device's open TRAIN task. A step's message is
taken once (a resent identical one is fine: the device asks again while a stage is
open); then the call waits, at most wait_seconds, for the stage to close and answers
with what the next stage needs, or ``ready=false`` (the device asks again).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from fedge.protos import fedge_pb2
from fedge.refusals import InvalidRequest, InvalidUpdate, StaleRequest
from fedge.secure import prg
from fedge.secure.masks import Advert
from fedge.server.fields import HEADER_METRICS, check_metrics
from fedge.server.registry import Device
from fedge.server.round_state import Assignment, Phase
from fedge.server.secure_round import (
    MASKED,
    SHARE,
    UNMASK,
    SecureRound,
    check_stage,
)
from fedge.tensors import CHUNK_BYTES

if TYPE_CHECKING:
    from fedge.server.rounds import Rounds

MAX_WAIT_S = 30.0  # a call holds an RPC thread at most this long


def _open(rounds: Rounds, device: Device, task_id: str, round_: int
          ) -> tuple[Assignment, SecureRound]:
    """The device's open task and its secure round (call under rounds.cond)."""
    assignment = rounds.current.assignments.get(device.device_id)
    secure = rounds.current.secure
    if (rounds.phase is not Phase.TRAINING or assignment is None or secure is None
            or assignment.task_id != task_id or assignment.round != round_):
        raise StaleRequest(f"task {task_id!r} of round {round_} is not this device's open "
                           "secure task")
    return assignment, secure


def _arrived(rounds: Rounds, secure: SecureRound) -> None:
    """Wakes the driver once the open stage has every message it waits for (call under
    rounds.cond after adding one). Not after each message: every handler parked on the
    stage would wake with it, n times n wakeups a stage."""
    if secure.complete():
        rounds.cond.notify_all()


def _wait_past(rounds: Rounds, secure: SecureRound, stage: int, wait_s: float) -> bool:
    """Waits until the stage has closed (True) or wait_s passed (False)."""
    end = time.monotonic() + max(0.0, min(wait_s, MAX_WAIT_S))
    while secure.stage <= stage and not rounds.stopping:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return False
        rounds.cond.wait(remaining)
    return secure.stage > stage


def _unmask_request(rounds: Rounds, secure: SecureRound, me: str, round_: int,
                    wait_s: float) -> fedge_pb2.SecureReply:
    """Stage 4's question to this device once the masked stage closed within wait_s:
    which neighbours' self-mask seeds and which mask keys to reveal (call under
    rounds.cond; not ready when the stage is still open)."""
    if not _wait_past(rounds, secure, MASKED, wait_s):
        return fedge_pb2.SecureReply(ready=False)
    check_stage(secure, UNMASK, round_)
    alive, gone = secure.sum.request(me)
    return fedge_pb2.SecureReply(ready=True, survivors=alive, dropped=gone)


def unmask_after_masked(rounds: Rounds, device: Device, header: fedge_pb2.MaskedHeader
                        ) -> fedge_pb2.SecureReply:
    """The unmasking request in the masked input's own reply, when the device waits for
    it (header.unmask_wait_seconds): one SecureStep call fewer per device a round."""
    if header.unmask_wait_seconds <= 0:
        return fedge_pb2.SecureReply(ready=False)
    with rounds.cond:
        _, secure = _open(rounds, device, header.task_id, header.round)
        return _unmask_request(rounds, secure, device.device_id, header.round,
                               header.unmask_wait_seconds)


def record_advert(rounds: Rounds, device: Device, poll: fedge_pb2.PollRequest) -> None:
    """Keeps the public keys a poll of a secure run carried (stage 1) for the next
    secure round that samples the device: the latest poll's replace the last, and a
    round's roster takes them (fedge.server.secure_round.open_secure). One advert per
    device is kept, whatever it sends."""
    if not (rounds.settings.secure and poll.HasField("advert")):
        return
    a = poll.advert
    if a.device_id != device.device_id or len(a.encrypt_public) != 32 or len(a.mask_public) != 32:
        raise InvalidRequest("an advert is this device's id and two 32-byte X25519 public "
                             "keys")
    # a generator this server does not know counts as no preference (ChaCha20)
    advert = Advert(device.device_id, a.encrypt_public, a.mask_public,
                    a.mask_prg if a.mask_prg in prg.NAMES else prg.DEFAULT)
    with rounds.cond:  # open_secure takes it under the same lock
        device.advert = advert


def secure_step(rounds: Rounds, device: Device, request: fedge_pb2.SecureRequest
                ) -> fedge_pb2.SecureReply:
    """One SecureStep call (see the module docstring)."""
    me = device.device_id
    with rounds.cond:
        _, secure = _open(rounds, device, request.task_id, request.round)
        total = secure.sum
        if request.stage == fedge_pb2.SECURE_SHARE:
            if me not in total.shared:
                check_stage(secure, SHARE, request.round)
                sealed = {p.peer: p.data for p in request.shares}
                if len(sealed) != len(request.shares) or any(len(v) > 1024
                                                               for v in sealed.values()):
                    raise InvalidRequest("one share message (at most 1 KiB) per neighbour")
                try:
                    total.add_shares(me, sealed)
                except ValueError as exc:
                    raise InvalidRequest(str(exc)) from None
                _arrived(rounds, secure)
            if not _wait_past(rounds, secure, SHARE, request.wait_seconds):
                return fedge_pb2.SecureReply(ready=False)
            return fedge_pb2.SecureReply(ready=True, shares=[
                fedge_pb2.PeerBytes(peer=p, data=d)
                for p, d in sorted(total.messages_for(me).items())])
        if me not in total.weights:
            raise StaleRequest("this device's masked input is not part of the round")
        if request.stage == fedge_pb2.SECURE_UNMASK:
            return _unmask_request(rounds, secure, me, request.round, request.wait_seconds)
        if request.stage == fedge_pb2.SECURE_REVEAL:
            check_stage(secure, UNMASK, request.round)
            try:
                total.add_reveal(me, {p.peer: p.data for p in request.seed_shares},
                                 {p.peer: p.data for p in request.key_shares})
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
            _arrived(rounds, secure)
            return fedge_pb2.SecureReply(ready=True, message="shares taken")
    raise InvalidRequest(f"unknown secure stage {request.stage}")


def submit_masked(rounds: Rounds, device: Device, header: fedge_pb2.MaskedHeader,
                  chunks: Iterator[bytes]) -> int:
    """Stage 3: receives a masked input and adds it to the round's sum, and keeps its
    training metrics for the round to write in one go (fedge.server.secure_round);
    returns the bytes received."""
    metrics = check_metrics(header.metrics, HEADER_METRICS)  # before anything is looked at
    with rounds.cond:
        assignment, secure = _open(rounds, device, header.task_id, header.round)
        check_stage(secure, MASKED, header.round)
        params = secure.params
        if device.device_id in secure.sum.weights:
            raise InvalidUpdate("this device's masked input already arrived")
    if header.size != params.size:
        raise InvalidUpdate(f"a masked input of {header.size} entries; the model has "
                            f"{params.size}")
    if not 1 <= header.num_examples <= params.weight_cap:
        raise InvalidUpdate(f"the weight must be in 1..{params.weight_cap}")
    masked = np.empty(params.size, "<u4")  # the wire's byte order
    raw, offset, digest = masked.view(np.uint8), 0, hashlib.sha256()
    for data in chunks:
        if len(data) > CHUNK_BYTES or offset + len(data) > raw.size:
            raise InvalidUpdate("a masked input's chunks must be at most 1 MiB and add up "
                                "to its size")
        raw[offset:offset + len(data)] = np.frombuffer(data, np.uint8)
        digest.update(data)
        offset += len(data)
    if offset != raw.size or digest.hexdigest() != header.sha256:
        raise InvalidUpdate("the masked input is incomplete or does not match its SHA-256")
    masked = masked.astype(np.uint32, copy=False)
    with rounds.cond:
        assignment, secure = _open(rounds, device, header.task_id, header.round)
        check_stage(secure, MASKED, header.round)
        try:
            secure.sum.add_masked(device.device_id, masked, float(header.num_examples))
        except ValueError as exc:
            raise InvalidUpdate(str(exc)) from None
        assignment.submitted = True
        if metrics:
            secure.metrics[device.device_id] = metrics
        rounds.current.examples += header.num_examples
        rounds.totals.updates_accepted += 1
        _arrived(rounds, secure)
    return offset
