"""The device's side of a secure round (SecAgg+) over gRPC.

In a secure run every poll carries fresh public keys (stage 1: advert, a
fedge.secure.device.KeyRing), and a TRAIN task whose TrainConfig carries SecureParams is
secure: it lists every device of the round, and the keys of this one and its
neighbours. Before training the device shares its secrets with its neighbours (stage
2); after training it clips its pseudo-gradient, weights it by its example count (with
distributed DP: weight 1, plus its share of the round's Gaussian noise), quantizes it
into Z_{2^32}, masks it and streams it (stage 3); then it answers the server's
unmasking request (stage 4: in the masked input's reply, or from SecureStep when the
masked stage outlasts the wait), refusing one that asks for both kinds of share of a
peer (fedge.secure.device). The server never receives the update in the clear.

Stage 2 starts with the task (start_keys): the share messages are made (a few ms) and
sent, and the call waits for the share stage to close while the daemon downloads the
model and trains. After training the daemon quantizes the update (encode) and collects
the share stage's answer (keys_done); if the stage is still open, it computes the masks
first (MaskingDevice.premask), so the masked input is an addition away when it closes.
No thread of its own: a simulation runs a hundred devices as threads of one process,
where a hundred more threads (and their masks computed while everyone downloads) cost
more than they overlap (BENCHMARKS.md). A step the server refuses, or a stage that
closes without this device, ends the device's part in the round (logged); the loop
takes its next task.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np

from fedge.client.channel import refusal_of
from fedge.client.session import Session
from fedge.client.transfers import with_resends
from fedge.errors import FedgeError
from fedge.protos import fedge_pb2
from fedge.secure import quantize, scratch
from fedge.secure.device import KeyRing, MaskingDevice, ProtocolError
from fedge.secure.masks import Advert, Params

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per masked-input chunk
WAIT_S = 10.0  # how long each SecureStep call may be held for its stage


T = TypeVar("T")


def attempt(step: Callable[[], T], device_id: str, round_: int) -> T | None:
    """Runs a secure step; a refusal or a protocol failure ends this device's part in
    the round (logged, None) instead of the daemon. A lost session still rejoins."""
    try:
        return step()
    except grpc.RpcError as exc:
        refusal = refusal_of(exc)
        if refusal.needs_new_session:
            raise
        log.warning("%s: round %d: secure aggregation went on without this device (%s: "
                    "%s)", device_id, round_, refusal.code, refusal.details)
    except (FedgeError, ValueError) as exc:  # UnmaskRefused, a bad roster, NaN update
        log.error("%s: round %d: secure aggregation step refused: %s", device_id, round_,
                  exc)
    return None


def params_of(task: fedge_pb2.Task) -> Params:
    """A secure TRAIN task's public parameters."""
    p = task.train.secure
    return Params(round=task.round, threshold=p.threshold, degree=p.degree, seed=p.seed,
                  size=p.size, clip=p.clip, weight_cap=p.weight_cap, scale=p.scale,
                  noise_std=p.noise_std)


BLOCK = 1 << 20  # entries per block of the pseudo-gradient (8 MiB of float64; see
# quantize.encode_blocks on why few large blocks)


def pseudo_gradient(kind: str, global_weights: Mapping[str, np.ndarray],
                    update: Mapping[str, np.ndarray]) -> quantize.Blocks:
    """What the server would fold, flattened (vector.flatten's order), as float64
    blocks: w_global - w, -delta, or the gradient. Each call of the result yields them
    afresh into one block buffer (borrowed from fedge.secure.scratch, so the second call
    and the next round reuse its pages), and the device never holds the pseudo-gradient
    whole (quantize.encode_blocks reads it twice: for its norm, then to encode it). A
    block is valid until the next is asked for: copy one to keep it."""
    if kind == "weights" and sorted(global_weights) != sorted(update):
        raise ValueError("the update's tensors are not the model's")

    largest = max((int(np.size(a)) for a in update.values()), default=0)

    def blocks() -> Iterator[np.ndarray]:
        with scratch.POOL.borrow(min(BLOCK, largest), np.float64) as buffer:
            yield from _fill(buffer)

    def _fill(buffer: np.ndarray) -> Iterator[np.ndarray]:
        for name in sorted(update):
            mine = np.asarray(update[name]).reshape(-1)
            theirs = np.asarray(global_weights[name]).reshape(-1) if kind == "weights" \
                else None
            for start in range(0, mine.size, BLOCK):
                part, out = mine[start:start + BLOCK], buffer[:min(BLOCK, mine.size - start)]
                if theirs is not None:
                    np.subtract(theirs[start:start + BLOCK], part, out=out, dtype=np.float64)
                elif kind == "delta":
                    np.negative(part, out=out, dtype=np.float64)
                else:
                    np.copyto(out, part, casting="unsafe")
                yield out
    return blocks


def masked_chunks(header: fedge_pb2.MaskedHeader, masked: np.ndarray
                  ) -> Iterator[fedge_pb2.MaskedChunk]:
    """The messages of one masked upload: the header, then chunks of at most 1 MiB."""
    yield fedge_pb2.MaskedChunk(header=header)
    raw = little_endian_bytes(masked)
    for offset in range(0, len(raw), CHUNK):
        yield fedge_pb2.MaskedChunk(data=bytes(raw[offset:offset + CHUNK]))


def little_endian_bytes(masked: np.ndarray) -> memoryview:
    """The masked input's wire bytes, a view (no copy on a little-endian machine)."""
    return memoryview(np.ascontiguousarray(masked, "<u4").data).cast("B")


class SecureTask:
    """One device's secure round: start_keys() before training; encode(), keys_done()
    and submit() after.

    session: the daemon's joined session (fedge.client.session.Session); ring: the keys
    its polls advertised, of which the task's roster names one (raises ProtocolError
    when this device holds none of the roster's).
    The DP noise comes from the OS's entropy: noise from a known seed could be removed.
    """

    def __init__(self, session: Session, task: fedge_pb2.Task, ring: KeyRing) -> None:
        self._rng = np.random.default_rng()
        self._session = session
        self._task = task
        self.params = params_of(task)
        p = task.train.secure
        # The keys of this device's neighbourhood, every device's id, the generator.
        self.roster = {v.device_id: Advert(v.device_id, v.encrypt_public, v.mask_public,
                                           v.mask_prg) for v in p.roster}
        self._devices, self._prg = list(p.devices), p.mask_prg
        mine = self.roster.get(session.device_id)
        if mine is None:
            raise ProtocolError("the round's roster does not list this device")
        self.device = MaskingDevice(session.device_id, self.params, pairs=ring.take(mine))
        self._messages: dict[str, bytes] = {}
        self._share: fedge_pb2.SecureRequest | None = None  # start_keys()'s call
        self._sharing: grpc.Future | None = None  # its first call, in flight
        self._weight = 1  # encode()'s, capped example count
        self.missed = False  # finish(): stage 2 went on without this device

    @classmethod
    def start(cls, session: Session, task: fedge_pb2.Task, ring: KeyRing | None
              ) -> SecureTask | None:
        """The task's SecureTask with stage 2 under way (start_keys), or None (logged)
        when this device cannot take part: it holds none of the roster's keys."""
        if ring is None:
            log.error("%s: round %d: a secure task, but the server did not say the run is "
                      "secure at Join", session.device_id, task.round)
            return None

        def begin() -> SecureTask:
            secure = cls(session, task, ring)
            secure.start_keys()
            return secure
        return attempt(begin, session.device_id, task.round)

    def finish(self, kind: str, global_weights: Mapping[str, np.ndarray],
               update: Mapping[str, np.ndarray], num_examples: int,
               metrics: Mapping[str, float]) -> int | None:
        """After training: the update encoded (while stage 2 may still be open), masked
        and sent, and the unmasking answered; the bytes sent, or None (logged; missed
        when stage 2 went on without this device)."""
        gradient = pseudo_gradient(kind, global_weights, update)
        encoded = attempt(lambda: self.encode(gradient, num_examples),
                          self._session.device_id, self._task.round)
        if not self.keys_done():
            self.missed = True
            return None
        return None if encoded is None else attempt(
            lambda: self.submit(encoded, metrics), self._session.device_id, self._task.round)

    def _step(self, **fields: Any) -> fedge_pb2.SecureReply:
        """Calls SecureStep until the stage closes (ready) or the round's deadline."""
        return self._until_ready(self._request(**fields))

    def _request(self, **fields: Any) -> fedge_pb2.SecureRequest:
        s, task = self._session, self._task
        return fedge_pb2.SecureRequest(session_id=s.id, task_id=task.task_id,
                                       round=task.round, wait_seconds=WAIT_S, **fields)

    def _until_ready(self, request: fedge_pb2.SecureRequest,
                     future: grpc.Future | None = None) -> fedge_pb2.SecureReply:
        """The reply to request once its stage closed; future: its first call, if made."""
        s = self._session
        while True:
            if future is None:
                future = s.stub.SecureStep.future(request, timeout=WAIT_S + 30)
            reply: fedge_pb2.SecureReply = s.call(future)
            future = None
            if reply.ready:
                return reply

    def _send(self, header: fedge_pb2.MaskedHeader, masked: np.ndarray
              ) -> fedge_pb2.SubmitReply:
        """Streams the masked input; resends after a backoff while the refusal allows it
        (the server's upload slots are full: ``busy``) and the deadline is not reached,
        as a plain update is (fedge.client.transfers.submit). Raises the last
        grpc.RpcError otherwise."""
        s = self._session
        return with_resends(s, header.round, "masked input", self._task.deadline_unix,
                            lambda attempt: s.stub.SubmitMasked(
                                masked_chunks(header, masked),
                                timeout=max(30.0, self._task.deadline_unix - time.time() + 30)))

    def start_keys(self) -> None:
        """Stage 2, begun: the share messages for the neighbours, sent; the call waits
        for the stage to close while the daemon downloads and trains (keys_done)."""
        sealed = self.device.share(self.roster, self._devices, self._prg)
        self._share = self._request(stage=fedge_pb2.SECURE_SHARE, shares=[
            fedge_pb2.PeerBytes(peer=p, data=d) for p, d in sorted(sealed.items())])
        self._sharing = self._session.stub.SecureStep.future(self._share,
                                                             timeout=WAIT_S + 30)

    def keys_done(self) -> bool:
        """Stage 2's end: True when it went through (this device's share messages
        kept), False when the round went on without this device (logged); re-raises
        what else ended it (Stopped, a session the server no longer knows). While the
        stage is still open the masks are computed first (premask): they need neither
        the messages nor the update."""
        request, first = self._share, self._sharing
        if request is None:
            raise RuntimeError("keys_done() before start_keys()")
        if first is not None and not first.done():
            self.device.premask()
        reply = attempt(lambda: self._until_ready(request, first),
                        self._session.device_id, self._task.round)
        self._sharing = None
        if reply is None:
            return False
        self._messages = {m.peer: m.data for m in reply.shares}
        return True

    def encode(self, gradient: quantize.Blocks, num_examples: int) -> np.ndarray:
        """Stage 3's input: the update (the pseudo-gradient's blocks) clipped, weighted
        by the example count, with distributed DP plus this device's share of the noise,
        and quantized. It needs neither the masks nor the share messages, so the daemon
        runs it before keys_done(), while the share stage may still be open: after the
        stage closes only the masking (an addition) and the upload are left."""
        p = self.params
        self._weight = max(1, min(num_examples, p.weight_cap))
        return quantize.encode_blocks(gradient, p.size, p.clip, float(self._weight),
                                      p.scale, p.noise_std, self._rng)

    def submit(self, encoded: np.ndarray, metrics: Mapping[str, float]) -> int:
        """Stages 3 and 4: mask and send the encoded update (encode()), then unmask;
        returns the bytes of the masked input."""
        p = self.params
        masked = self.device.mask(encoded, self._messages)
        s, task = self._session, self._task
        header = fedge_pb2.MaskedHeader(
            session_id=s.id, task_id=task.task_id, round=task.round,
            num_examples=self._weight, size=p.size, metrics=dict(metrics),
            sha256=hashlib.sha256(little_endian_bytes(masked)).hexdigest(),
            unmask_wait_seconds=WAIT_S)
        reply = self._send(header, masked).unmask  # the unmasking request, if it came
        if not reply.ready:  # the masked stage still open (or a server that never sends it)
            reply = self._step(stage=fedge_pb2.SECURE_UNMASK)
        seeds, keys = self.device.reveal(list(reply.survivors), list(reply.dropped))
        self._step(stage=fedge_pb2.SECURE_REVEAL,
                   seed_shares=[fedge_pb2.PeerBytes(peer=k, data=v) for k, v in seeds.items()],
                   key_shares=[fedge_pb2.PeerBytes(peer=k, data=v) for k, v in keys.items()])
        return int(masked.nbytes)
