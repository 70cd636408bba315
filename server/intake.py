"""The intake of an update: one ordered pipeline of small filters, no gRPC.

Every update a device sends passes these filters in this order before it may touch the
round's aggregate. Each is a pure function (or a generator over the chunk stream) and
raises exactly one kind of refusal from :mod:`fedge.refusals`, whose rule says whether
it settles the device's task and whether the daemon may retry:

==  =======================  ==========================================  ===============
 #  filter                   checks                                      refusal
==  =======================  ==========================================  ===============
 1  :func:`chunk_limit`      no chunk over ``CHUNK_BYTES``               TooLarge
 2  :func:`update_limit`     the stream within ``max_update_bytes``      TooLarge
 3  :func:`crc_checked`      a chunk's CRC-32, where it carries one      Corrupt
 4  :class:`StreamDigest`    (records the stream's SHA-256 as it passes)
 5  :func:`assemble`         names, dtypes, shapes, order, completeness  InvalidUpdate
 6  :func:`check_digest`     the SHA-256 announced in the header         Corrupt
 7  :func:`decode_update`    the encoding's own checks (int8 scales,     InvalidUpdate
                             top-k indices)
 8  :func:`pseudo_gradient`  (turns the update into ``g`` against the
                             round's global model)
 9  :func:`check_finite`     no NaN or infinite value in ``g``           InvalidUpdate
10  :func:`bound_norm`       ``||g|| <= max_update_norm``, or clip        InvalidUpdate
11  :func:`clip_distance`    ``||g|| <= the round's bound`` (clips)
                             (fedge.server.bounds)
12  the strategy's           (``accumulator.add(g, weight)``, the weight
    accumulator              capped by fedge.server.bounds)
==  =======================  ==========================================  ===============

:func:`receive` runs filters 1-7 over a stream of tensor chunks; :func:`prepare` runs
8-11 against the global model of the update's round; the round state
(fedge.server.rounds) calls :func:`prepare` and then its strategy's accumulator.

Updates are folded as pseudo-gradients, differences against the global model, not as
weights: ``w_global - w_k`` of two nearby float32 numbers is exact (Sterbenz), so the
fold sums small numbers and ``weights`` and ``delta`` updates give the same aggregate
to float32 rounding, and an update that changed nothing contributes exactly zero.
Finiteness is checked on ``g`` rather than on the update, so that a finite but huge
weight whose difference overflows is refused too.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedge.encodings import decode, wire_specs
from fedge.protos import fedge_pb2
from fedge.refusals import Corrupt, EndedEarly, InvalidUpdate, TooLarge, quote
from fedge.tensors import (
    CHUNK_BYTES,
    ChecksumError,
    Incomplete,
    Spec,
    TensorAssembler,
    TensorError,
    l2_norm,
)
from fedge.tensors import check_crc32 as _crc32
from fedge.wire import UPDATE_KIND_NAMES

log = logging.getLogger(__name__)

Chunks = Iterable[fedge_pb2.TensorChunk]
NAME_CHARS = 256
FINITE_BLOCK = 1 << 20  # values checked at once by check_finite
# An update of at least this many bytes is hashed on a thread of its own (StreamDigest),
# at most DIGEST_QUEUE chunks behind the stream.
DIGEST_THREAD_BYTES = 16 << 20
DIGEST_QUEUE = 16


@dataclass(frozen=True)
class Expected:
    """What a run's updates must look like on the wire.

    specs: the task's tensors; encoding, topk_fraction: how updates travel;
    max_bytes: the largest update stream taken (``--max-update-bytes``).
    """

    specs: tuple[Spec, ...]
    encoding: str
    topk_fraction: float
    max_bytes: int

    @property
    def wire_bytes(self) -> int:
        """The bytes of a whole update on the wire."""
        return sum(s.nbytes for s in self.wire)

    @property
    def wire(self) -> list[Spec]:
        """The tensors an update travels as, in this run's encoding."""
        return wire_specs(self.specs, self.encoding, self.topk_fraction)


# ------------------------------------------------------------------ the stream (1-7)

def chunk_limit(chunks: Chunks) -> Iterator[fedge_pb2.TensorChunk]:
    """1. Refuses a chunk over CHUNK_BYTES (TooLarge), or whose tensor name is over
    NAME_CHARS (it is quoted in refusals and logs)."""
    for chunk in chunks:
        if len(chunk.name) > NAME_CHARS:
            raise TooLarge(f"a tensor name of {len(chunk.name)} characters is over the "
                           f"limit of {NAME_CHARS}: {quote(chunk.name)}")
        if len(chunk.data) > CHUNK_BYTES:
            raise TooLarge(f"a chunk of {len(chunk.data)} bytes is over the {CHUNK_BYTES}-"
                           "byte chunk limit")
        yield chunk


def update_limit(chunks: Chunks, max_bytes: int) -> Iterator[fedge_pb2.TensorChunk]:
    """2. Refuses a stream whose data grows past max_bytes (TooLarge), before it is held."""
    total = 0
    for chunk in chunks:
        total += len(chunk.data)
        if total > max_bytes:
            raise TooLarge(f"update exceeds the maximum of {max_bytes} bytes "
                           "(--max-update-bytes)")
        yield chunk


def crc_checked(chunks: Chunks) -> Iterator[fedge_pb2.TensorChunk]:
    """3. Refuses a chunk whose data fails the CRC-32 it carries (Corrupt). A chunk
    without one passes (JoinReply.update_crc_optional): the stream's SHA-256 (6) covers
    every chunk's bytes, and a damaged one fails it when the stream ends."""
    for chunk in chunks:
        try:
            _crc32(chunk, required=False)
        except ChecksumError as exc:
            raise Corrupt(str(exc)) from None
        yield chunk


class StreamDigest:
    """4. The SHA-256 of the chunks' data, in stream order, computed as they pass
    (digest: one to go on with, for a resumed stream). threaded: hash on a thread of
    its own (hashlib lets go of the GIL), so that a large update's hashing overlaps
    its parsing and storing instead of adding to them; the digest is whole again
    whenever the iteration ends, however it ends."""

    def __init__(self, chunks: Chunks, digest: Any = None, threaded: bool = False) -> None:
        self._chunks = chunks
        self._digest = digest if digest is not None else hashlib.sha256()
        self._threaded = threaded

    def __iter__(self) -> Iterator[fedge_pb2.TensorChunk]:
        if not self._threaded:
            for chunk in self._chunks:
                self._digest.update(chunk.data)
                yield chunk
            return
        pending: queue.Queue[Any] = queue.Queue(maxsize=DIGEST_QUEUE)
        worker = threading.Thread(target=self._hash, args=(pending,), daemon=True,
                                  name="update-sha256")
        worker.start()
        try:
            for chunk in self._chunks:
                pending.put(chunk.data)  # immutable: a view of the received message
                yield chunk
        finally:
            pending.put(None)
            worker.join()

    def _hash(self, pending: queue.Queue[Any]) -> None:
        while (data := pending.get()) is not None:
            self._digest.update(data)

    def hexdigest(self) -> str:
        """The digest of everything that has passed so far."""
        return self._digest.hexdigest()


def assemble(chunks: Chunks, wire: Iterable[Spec],
             assembler: TensorAssembler | None = None) -> dict[str, np.ndarray]:
    """5. The wire tensors, each checked against its expected name, dtype and shape,
    sent in order and whole (InvalidUpdate). assembler: one holding the part of the
    stream that came before (a resumed upload)."""
    assembler = assembler or TensorAssembler(wire)
    try:
        for chunk in chunks:
            assembler.add(chunk)
        return assembler.finish()
    except Incomplete as exc:
        raise EndedEarly(str(exc)) from None
    except TensorError as exc:
        raise InvalidUpdate(str(exc)) from None


def check_digest(actual: str, announced: str) -> None:
    """6. Refuses a stream whose SHA-256 is not the one its header announced (Corrupt)."""
    if actual != announced:
        raise Corrupt("the update's bytes do not match the SHA-256 in its header")


def decode_update(wire: Mapping[str, np.ndarray], expected: Expected) -> dict[str, np.ndarray]:
    """7. The task's tensors back from their encoding (InvalidUpdate)."""
    try:
        return decode(wire, expected.specs, expected.encoding)
    except TensorError as exc:
        raise InvalidUpdate(str(exc)) from None


class Received:
    """What has arrived of one update stream: its tensors so far and the running
    SHA-256 of its data. A stream that breaks leaves it whole up to its last chunk, so
    a resumed stream goes on from ``offset`` (fedge.server.partial_uploads)."""

    def __init__(self, wire: Iterable[Spec]) -> None:
        self.assembler = TensorAssembler(wire)
        self.digest = hashlib.sha256()

    @property
    def offset(self) -> int:
        """Data bytes received, in stream order."""
        return self.assembler.bytes_received

    @property
    def held(self) -> int:
        """Bytes of memory its tensors take."""
        return self.assembler.bytes_allocated

    def discard(self) -> None:
        """Lets go of what arrived (memory: nothing to do; see fedge.server.spool)."""


def receive(chunks: Chunks, expected: Expected, sha256: str,
            received: Received | None = None) -> dict[str, np.ndarray]:
    """Filters 1-7: the decoded update from a stream of tensor chunks. received: what
    arrived of this update before (its stream resumes), updated in place as chunks pass."""
    received = received or Received(expected.wire)
    limited = update_limit(chunk_limit(chunks), expected.max_bytes - received.offset)
    digest = StreamDigest(crc_checked(limited), received.digest,
                          threaded=expected.wire_bytes >= DIGEST_THREAD_BYTES)
    wire = assemble(digest, expected.wire, received.assembler)
    check_digest(digest.hexdigest(), sha256)
    return decode_update(wire, expected)


# ------------------------------------------------------------------ the values (8-10)

def pseudo_gradient(kind: str, global_weights: Mapping[str, np.ndarray],
                    update: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """8. The update as a pseudo-gradient, reusing its arrays (the caller gives them up).

    ``weights`` (the client's new model w_k): ``g = w_global - w_k``; ``delta``
    (``w_k - w_global``): ``g = -delta``; ``gradient`` (the mean loss gradient at
    w_global): ``g`` as sent. A server optimizer then steps ``w <- w - lr * aggregate(g)``;
    with lr 1 and FedAvg's mean this is the weighted mean of the client models.
    Floating-point tensors keep their dtype (float32); integer tensors (counters)
    become float64.
    """
    if kind not in UPDATE_KIND_NAMES:
        raise ValueError(f"unknown update kind {kind!r}; use one of {UPDATE_KIND_NAMES}")
    out = {}
    for name, x in update.items():
        if x.dtype.kind != "f" or not x.flags.writeable:
            x = x.astype(np.float64 if x.dtype.kind != "f" else x.dtype)
        if kind == "weights":
            with np.errstate(over="ignore"):  # an overflow is refused by check_finite
                np.subtract(global_weights[name], x, out=x, casting="unsafe")
        elif kind == "delta":
            np.negative(x, out=x)
        out[name] = x
    return out


def check_finite(arrays: Mapping[str, np.ndarray]) -> None:
    """9. Refuses NaN or infinite values, naming the first such tensor (InvalidUpdate)."""
    for name, array in arrays.items():
        if array.dtype.kind != "f":
            continue
        flat = array.reshape(-1)
        # In blocks: np.isfinite of a whole 1 GB tensor would allocate 256 MB of bools.
        for start in range(0, flat.size, FINITE_BLOCK):
            block = flat[start : start + FINITE_BLOCK]
            if not np.isfinite(block).all():
                what = "NaN" if np.isnan(block).any() else "infinite values"
                raise InvalidUpdate(f"tensor {name!r} holds {what}")


def _scale(gradient: MutableMapping[str, np.ndarray], scale: float) -> None:
    for array in gradient.values():
        if array.dtype.kind == "f":
            array *= scale


def bound_norm(gradient: MutableMapping[str, np.ndarray], max_norm: float,
               action: str, length: float | None = None) -> float:
    """10. Enforces ``||gradient|| <= max_norm`` (0 means no bound).

    action "refuse" raises InvalidUpdate; "clip" scales gradient down to the bound, in
    place. length: the gradient's norm if already known. Returns the norm before any
    clipping (0.0 without a bound and length: not computed, as it costs a float64 pass
    over the model).
    """
    if max_norm <= 0:
        return length or 0.0
    length = l2_norm(gradient) if length is None else length
    scale = norm_scale(length, max_norm, action)
    if scale != 1.0:
        _scale(gradient, scale)
    return length


def norm_scale(length: float, max_norm: float, action: str) -> float:
    """Filter 10's rule for an update of norm length: 1.0 within max_norm (or without a
    bound), else InvalidUpdate under "refuse" and the factor that clips it under "clip".
    The one rule for updates in memory (bound_norm) and spooled (fedge.server.spool)."""
    if max_norm <= 0 or length <= max_norm:
        return 1.0
    if action == "refuse":
        raise InvalidUpdate(f"update norm {length:.4g} exceeds the bound of {max_norm:.4g} "
                            "(--max-update-norm)")
    log.info("clipped an update of norm %.4g to %.4g", length, max_norm)
    return max_norm / length


def distance_scale(length: float, bound: float) -> float:
    """Filter 11's rule: the factor that clips a gradient of norm length to the round's
    distance bound (1.0 within it, or with no bound: 0)."""
    return bound / length if 0 < bound < length else 1.0


def clip_distance(gradient: MutableMapping[str, np.ndarray], length: float,
                  bound: float) -> bool:
    """11. Clips a gradient of norm length to the round's distance bound, in place
    (0: no bound; see fedge.server.bounds for how the bound is chosen); True if it did."""
    scale = distance_scale(length, bound)
    if scale == 1.0:
        return False
    _scale(gradient, scale)
    return True


def prepare(update: dict[str, np.ndarray], global_weights: Mapping[str, np.ndarray],
            kind: str, max_norm: float, action: str) -> dict[str, np.ndarray]:
    """Filters 8-10: the checked, bounded pseudo-gradient of a decoded update against
    the global model of its round (the caller gives up update's arrays)."""
    return prepare_bounded(update, global_weights, kind, max_norm, action).gradient


@dataclass
class Prepared:
    """An update ready to fold: its pseudo-gradient, its norm before any clipping
    (0.0 when nothing asked for it) and whether the round's bound clipped it."""

    gradient: dict[str, np.ndarray]
    norm: float
    clipped: bool


def prepare_bounded(update: dict[str, np.ndarray], global_weights: Mapping[str, np.ndarray],
                    kind: str, max_norm: float, action: str, round_bound: float = 0.0,
                    measure: bool = False) -> Prepared:
    """Filters 8-11, the norm computed once: round_bound is the round's distance bound
    (0: none); measure: compute the norm even without any bound (for the next round's
    reference distance)."""
    gradient = pseudo_gradient(kind, global_weights, update)
    check_finite(gradient)
    length = l2_norm(gradient) if (measure or round_bound > 0 or max_norm > 0) else 0.0
    bound_norm(gradient, max_norm, action, length)
    # A gradient bound_norm clipped is now max_norm long.
    after = min(length, max_norm) if max_norm > 0 else length
    clipped = clip_distance(gradient, after, round_bound)
    return Prepared(gradient, length, clipped)
