"""Large updates spooled to disk as they stream, checked on the way, folded from disk.

An update held whole in memory costs the server one model per upload in flight, on top
of the global model and the running sum: 3x the model for a 1 GB model with one upload
at a time. Above ``--spool-threshold-bytes`` an update instead goes to a file under
``STATE_DIR/spool`` as its chunks arrive, and every check that needs the whole update
runs on the way, one chunk at a time:

- the intake's stream filters as for any update (chunk and stream size, CRC-32, the
  SHA-256 of the stream, checked at its end);
- names, dtypes, shapes and byte counts, each chunk written at its tensor's place;
- the pseudo-gradient ``g`` of each chunk against the round's global model, refused if
  not finite (after the SHA-256, as in memory) and summed into ``||g||^2``.

So when the stream ends the update's norm is known, the norm bound and the round's
distance bound give its scale (:func:`prepare_spooled`, the same rules as
fedge.server.intake's filters 10-11), and :func:`fold_any` reads it back in blocks
with plain reads (not mmap, whose touched pages count as the server's resident memory),
turns each block into ``g`` again and adds it to the running sum in place
(``FedAvgFold.add_blocks``): the same float32 operations, element by element, as the
in-memory fold.

A spool file has no name (``tempfile.TemporaryFile``: O_TMPFILE on Linux), so it is
gone when it is closed, on every path: folded, refused, dropped as a broken stream, and
when the server process ends however it ends. All spool files together stay within
``--spool-budget-bytes`` (each reserves its update's full size when it opens); an
update that does not fit is refused ``busy``, which the daemon retries.

Only the FedAvg family folds from disk (its accumulator is a running sum), only updates
in the ``f32`` encoding (the bytes are the values) and only in synchronous rounds; the
others keep the in-memory path (:func:`spool_for` says which and why).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from fedge.protos import fedge_pb2
from fedge.refusals import Busy, EndedEarly, InvalidUpdate, StaleRequest
from fedge.server.intake import (
    DIGEST_THREAD_BYTES,
    Expected,
    Prepared,
    StreamDigest,
    check_digest,
    chunk_limit,
    crc_checked,
    distance_scale,
    norm_scale,
    prepare_bounded,
    update_limit,
)
from fedge.server.strategies.fedavg import FedAvgFold
from fedge.tensors import Incomplete, Spec, TensorError, check_chunk, check_complete, check_dtype

if TYPE_CHECKING:
    from fedge.server.admission import Guards
    from fedge.server.rounds import Rounds

log = logging.getLogger(__name__)

BLOCK_BYTES = 4 << 20  # read per block when folding: a multiple of every dtype's size


Reference = Callable[[], tuple[Mapping[str, np.ndarray], str]]


class Spool:
    """The spool directory and its byte budget (all spool files together).

    reference: the round's global model and update kind, that an update's
    pseudo-gradient is measured against as it arrives.
    """

    def __init__(self, directory: Path, budget: int, threshold: int,
                 reference: Reference) -> None:
        self.directory = directory
        self.budget = budget
        self.threshold = threshold
        self.reference = reference
        self._lock = threading.Lock()
        self.reserved = 0  # bytes reserved by open spool files
        self.opened = 0  # spool files opened, ever (for tests and status)

    def applies(self, expected: Expected) -> bool:
        """Whether updates of this shape are spooled (f32, at least the threshold)."""
        return (expected.encoding == "f32" and list(expected.specs) == expected.wire
                and expected.wire_bytes >= self.threshold)

    def open(self, wire: list[Spec]) -> SpoolReceived:
        """A fresh spool file for one update against the round's global model (Busy
        when the budget has no room for it)."""
        size = sum(s.nbytes for s in wire)
        with self._lock:
            if self.reserved + size > self.budget:
                raise Busy(f"the server's update spool is full ({self.reserved} of "
                           f"{self.budget} bytes reserved); try again shortly")
            self.reserved += size
            self.opened += 1
        try:
            self.directory.mkdir(parents=True, exist_ok=True)  # on first use only
            file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 (closed by close)
        except BaseException:
            self.release(size)
            raise
        return SpoolReceived(self, file, wire, size, *self.reference())

    def release(self, size: int) -> None:
        """Gives back what a closed spool file reserved."""
        with self._lock:
            self.reserved -= size


class SpoolReceived:
    """What has arrived of one spooled update: the file, the running SHA-256, each
    tensor's progress and the running ``||g||^2`` against the global model reference.
    It takes a Received's place in fedge.server.partial_uploads (offset, held, digest)."""

    held = 0  # bytes of memory: none, the update is on disk

    def __init__(self, spool: Spool, file: Any, wire: list[Spec], size: int,
                 reference: Mapping[str, np.ndarray], kind: str) -> None:
        self.spool, self.file, self.size = spool, file, size
        # Weak: a broken upload kept to resume must not keep an old global model alive
        # (1x the model) after its round commits without it.
        self._reference = {n: weakref.ref(a) for n, a in reference.items()}
        self.kind = kind
        self.digest = hashlib.sha256()
        self.specs = {s.name: s for s in wire}
        # each tensor's first byte in the file
        self.places = dict(zip(self.specs, itertools.accumulate(
            (s.nbytes for s in wire), initial=0), strict=False))
        self.filled = dict.fromkeys(self.specs, 0)
        self.offset = 0  # data bytes received, in stream order
        self.squares = 0.0  # ||g||^2 so far, in float64
        self.nonfinite = ""  # the first tensor whose g is not finite (refused at the end)
        self.closed = False

    def add(self, chunk: fedge_pb2.TensorChunk) -> None:
        """Checks a chunk as TensorAssembler does, writes it at its place and measures
        its g (TensorError on a chunk that does not fit the update's tensors)."""
        spec = check_chunk(self.specs, self.filled, chunk)
        filled, data = self.filled[chunk.name], chunk.data
        dtype = check_dtype(spec.dtype).newbyteorder("<")
        self.offset += len(data)
        if data:
            os.pwrite(self.file.fileno(), data, self.places[chunk.name] + filled)
            g = gradient_block(self.kind, self.reference(chunk.name),
                               filled // dtype.itemsize,
                               np.frombuffer(data, dtype).astype(dtype.newbyteorder("=")))
            squares = float(np.einsum("i,i->", g, g, dtype=np.float64))
            # Squares of float32 values summed in float64 cannot overflow: the sum is
            # finite exactly when every value is, so no second pass over the chunk
            # (float64 values can overflow it: those are checked).
            if not math.isfinite(squares) and not self.nonfinite and (
                    g.dtype.itemsize <= 4 or not np.isfinite(g).all()):
                self.nonfinite = chunk.name
            self.squares += squares
        self.filled[chunk.name] = filled + len(data)

    def reference(self, name: str) -> np.ndarray:
        """Tensor name of the global model the update is measured against (StaleRequest
        once that model is gone: its round committed)."""
        array = self._reference[name]()
        if array is None:
            raise StaleRequest("the round's model changed while the update arrived")
        return array

    def measured_against(self, model: Mapping[str, np.ndarray]) -> bool:
        """Whether the update was measured against this model."""
        return all(ref() is model.get(n) for n, ref in self._reference.items())

    def finish(self, sha256: str, digest: str) -> SpooledUpdate:
        """The whole update, once complete (TensorError), its SHA-256 the announced one
        (Corrupt) and its g finite (InvalidUpdate)."""
        check_complete(self.specs, self.filled)
        check_digest(digest, sha256)
        if self.nonfinite:
            name = self.nonfinite
            raise InvalidUpdate(f"tensor {name!r} holds NaN or infinite values")
        return SpooledUpdate(self)

    def discard(self) -> None:
        """Closes (and so deletes) the spool file and gives back its reservation."""
        if not self.closed:
            self.closed = True
            self.file.close()
            self.spool.release(self.size)


def gradient_block(kind: str, reference: np.ndarray, start: int, x: np.ndarray
                   ) -> np.ndarray:
    """Filter 8 (fedge.server.intake.pseudo_gradient) on one block of one tensor: x,
    the update's values from element start, becomes g in place (integer tensors as
    float64)."""
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if kind == "weights":
        with np.errstate(over="ignore"):  # an overflow is refused as not finite
            np.subtract(reference.reshape(-1)[start : start + x.size], x, out=x,
                        casting="unsafe")
    elif kind == "delta":
        np.negative(x, out=x)
    return x


class SpooledUpdate:
    """A whole, checked update on disk, with its norm ``||g||`` against the reference
    global model; scales: the clipping factors the bounds decided, applied in order."""

    def __init__(self, received: SpoolReceived) -> None:
        self.received = received
        self.norm = float(np.sqrt(received.squares))
        self.scales: list[float] = []

    def blocks(self) -> Iterator[tuple[str, int, np.ndarray]]:
        """(tensor, first element, g) for each block of the update, read from disk."""
        r = self.received
        buffer = bytearray(BLOCK_BYTES)
        fd = r.file.fileno()
        for name, spec in r.specs.items():
            dtype = check_dtype(spec.dtype).newbyteorder("<")
            for start in range(0, spec.nbytes, BLOCK_BYTES):
                size = min(BLOCK_BYTES, spec.nbytes - start)
                view = memoryview(buffer)[:size]
                got = os.preadv(fd, [view], r.places[name] + start)
                if got != size:
                    raise OSError(f"spool file of {name!r} is short: {got} of {size} bytes")
                x = np.frombuffer(view, dtype).astype(dtype.newbyteorder("="), copy=False)
                g = gradient_block(r.kind, r.reference(name), start // dtype.itemsize, x)
                for scale in self.scales:  # as intake's _scale: each clip in turn
                    g *= scale
                yield name, start // dtype.itemsize, g

    def discard(self) -> None:
        """Deletes the spool file (folded or refused)."""
        self.received.discard()


def spool_receive(chunks: Iterable[fedge_pb2.TensorChunk], expected: Expected, sha256: str,
                  received: SpoolReceived) -> SpooledUpdate:
    """The intake's filters 1-6 and 8-9 over a stream written to disk (see the module
    doc): the update, ready for its bounds. received: this update's spool file, fresh
    or kept from a broken stream, advanced in place."""
    limited = update_limit(chunk_limit(chunks), expected.max_bytes - received.offset)
    digest = StreamDigest(crc_checked(limited), received.digest,
                          threaded=expected.wire_bytes >= DIGEST_THREAD_BYTES)
    try:
        for chunk in digest:
            received.add(chunk)
        return received.finish(sha256, digest.hexdigest())
    except Incomplete as exc:
        raise EndedEarly(str(exc)) from None
    except TensorError as exc:
        raise InvalidUpdate(str(exc)) from None


def prepare_spooled(update: SpooledUpdate, reference: Mapping[str, np.ndarray], kind: str,
                    max_norm: float, action: str, round_bound: float) -> Prepared:
    """Filters 10-11 on a spooled update whose norm is known: fedge.server.intake's
    rules (norm_scale, distance_scale), their clipping recorded as scales for the fold
    to apply."""
    if not update.received.measured_against(reference) or update.received.kind != kind:
        raise StaleRequest("the round's model changed while the update arrived")
    length = update.norm
    after = min(length, max_norm) if max_norm > 0 else length  # as prepare_bounded
    scales = [norm_scale(length, max_norm, action), distance_scale(after, round_bound)]
    update.scales.extend(s for s in scales if s != 1.0)
    return Prepared(update, length, scales[1] != 1.0)  # type: ignore[arg-type]


def prepare_any(update: dict[str, np.ndarray] | SpooledUpdate,
                reference: Mapping[str, np.ndarray], kind: str, max_norm: float,
                action: str, round_bound: float = 0.0, measure: bool = False) -> Prepared:
    """fedge.server.intake.prepare_bounded for an update in memory or on disk."""
    if isinstance(update, SpooledUpdate):
        return prepare_spooled(update, reference, kind, max_norm, action, round_bound)
    return prepare_bounded(update, reference, kind, max_norm, action, round_bound, measure)


def fold_any(fold: Any, gradient: Any, weight: float) -> None:
    """accumulator.add(gradient, weight), or for a spooled update its blocks read from
    disk into the running sum and then its file deleted, before the round may close on
    it (the fold's lock must be held)."""
    if isinstance(gradient, SpooledUpdate):
        fold.add_blocks(gradient.blocks(), weight,
                        {n: s.shape for n, s in gradient.received.specs.items()})
        gradient.discard()
    else:
        fold.add(gradient, weight)


def accept_update(rounds: Rounds, assignment: Any, update: Any, num_examples: int,
                  digest: str) -> None:
    """rounds.accept. A spooled update is answered once it is checked: its fold, a pass
    over its file, runs on a thread of its own that the round's close waits for (the
    assignment is folding), and its spool file is deleted after, folded or not."""
    if not isinstance(update, SpooledUpdate):
        rounds.accept(assignment, update, num_examples, digest)
        return
    try:
        fold = rounds.accept(assignment, cast(Any, update), num_examples, digest, defer=True)
    except BaseException:
        update.discard()
        raise
    assert fold is not None

    def run() -> None:
        try:
            fold()
        except Exception:  # the round then waits for this device as for a silent one
            log.exception("round %d: the fold of %s's spooled update failed",
                          assignment.round, assignment.device_id)
        finally:
            update.discard()  # a fold that failed: folded ones deleted it already

    threading.Thread(target=run, name=f"fold-{assignment.device_id}", daemon=True).start()


def folds_from_disk(strategy: Any) -> bool:
    """Whether the strategy's accumulator is the plain running sum, which add_blocks
    folds as add() does (not central DP's ClippedFold, whose add() clips first)."""
    return type(strategy.new_accumulator()) is FedAvgFold


def spool_for(rounds: Rounds, guards: Guards) -> Spool | None:
    """The server's spool, or None where updates stay in memory: no spool directory,
    asynchronous rounds, or a strategy whose accumulator is not a running sum (median,
    trimmed mean and Krum hold every update of a round in memory anyway; central DP
    clips each update in memory)."""
    from fedge.server.rounds import Rounds

    if not guards.spool_dir or type(rounds).accept is not Rounds.accept:
        return None
    if not folds_from_disk(rounds.strategy):
        size = sum(s.nbytes for s in rounds.specs)
        if size >= guards.spool_threshold_bytes:
            log.warning("strategy %s keeps each update of a round in memory (%d bytes "
                        "each, not spooled to disk): the server needs about %d bytes per "
                        "device sampled", rounds.strategy.name, size, size)
        return None
    spool = Spool(Path(guards.spool_dir), guards.spool_budget_bytes,
                  guards.spool_threshold_bytes,
                  lambda: (rounds.global_model, rounds.settings.update_kind))
    rounds.sum_in_blob = spool.applies(Expected(
        tuple(rounds.specs), rounds.settings.encoding, rounds.settings.topk_fraction, 0))
    if rounds.sum_in_blob:  # no evaluated model waits beside the new one and the next blob
        rounds.evaluations.queue = 0
    return spool
