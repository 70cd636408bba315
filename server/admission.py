"""Admission before resources: what a stream must show before it costs the server
anything, and the clocks that cut a stream that stops moving.

- :class:`StreamWatch` runs one thread that cuts (cancels) every watched stream idle for
  ``idle_s`` between messages, or older than its end (``max_s``, and for an upload its
  round's deadline). A cut stream's handler wakes at once and lets go of its slot and
  thread; the device sees ``CANCELLED`` and may retry.
- :func:`admitted_chunks` refuses what the intake would otherwise read to the end: empty
  chunks of tensors that have bytes, and more chunks than the task's update can need.
- :func:`check_num_tensors` refuses a header announcing another tensor count than the
  task's.
- :class:`AddressSeats` caps the live anonymous devices of one client address, so that
  one host cannot pass for a crowd (Sybils).

The order in ``fedge.server.service``: rate limit (per address, or per token, before
the token is looked up), token, header, session, task, these checks, and only then an
upload slot.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import grpc

from fedge.protos import fedge_pb2
from fedge.refusals import Busy, InvalidUpdate, StreamCut
from fedge.server.registry import Device
from fedge.tensors import Spec

log = logging.getLogger(__name__)

M = TypeVar("M")

# The smallest chunk size a well-behaved device is expected to use: a stream may carry
# one chunk per tensor plus its bytes in chunks of this size, and no more.
MIN_CHUNK_BYTES = 4096


class Watched:
    """One watched stream: when it was last heard from and when it must end."""

    def __init__(self, context: grpc.ServicerContext, what: str, idle_s: float,
                 max_s: float) -> None:
        self.context = context
        self.what = what
        self.idle_s = idle_s
        now = time.monotonic()
        self._last = now
        self._end = now + max_s
        self._end_why = f"it ran past its {max_s:g} s limit"
        self.cut = ""  # why the watch cut it ("" while it runs)
        self._finished = False

    def touch(self) -> None:
        """A message went through: the idle clock starts again."""
        self._last = time.monotonic()

    def end_by(self, unix_time: float, why: str) -> None:
        """The stream must also end by unix_time (time.time()): a round's deadline."""
        end = time.monotonic() + (unix_time - time.time())
        if end < self._end:
            self._end, self._end_why = end, why

    def finish(self) -> None:
        """The device's part is done (all read): the clocks stop."""
        self._finished = True

    def hung_up(self, grace_s: float = 1.0) -> bool:
        """Whether the device hung up on a stream that ended early. gRPC can end the
        request iterator of a call whose connection broke a moment before it marks the
        call cancelled, so a stream that looks closed by its device is given grace_s to
        turn out broken."""
        end = time.monotonic() + grace_s
        while self.context.is_active():
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
        return True

    def expired(self, now: float) -> str:
        """Why the stream must be cut now ("" if it may go on)."""
        if self._finished:
            return ""
        if now - self._last > self.idle_s:
            return f"it was idle for over {self.idle_s:g} s"
        if now > self._end:
            return self._end_why
        return ""

    def messages(self, iterator: Iterable[M]) -> Iterator[M]:
        """The stream's messages, each restarting the idle clock; a stream this watch
        cut ends in StreamCut (the refusal the server logs) instead of gRPC's error."""
        try:
            for message in iterator:
                self.touch()
                yield message
        except grpc.RpcError:
            if self.cut:
                raise StreamCut(f"{self.what} cut: {self.cut}") from None
            raise


class StreamWatch:
    """Cuts watched streams that are idle or past their end, from one thread."""

    def __init__(self, idle_s: float, max_s: float) -> None:
        self.idle_s, self.max_s = idle_s, max_s
        # Cut within a quarter of the shorter limit, but never spin.
        self._tick = min(1.0, max(0.05, min(idle_s, max_s) / 4))
        self._lock = threading.Lock()
        self._streams: set[Watched] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cuts = 0  # streams cut so far

    @contextmanager
    def watch(self, context: grpc.ServicerContext, what: str) -> Iterator[Watched]:
        """Watches one stream while the block runs."""
        watched = Watched(context, what, self.idle_s, self.max_s)
        with self._lock:
            self._streams.add(watched)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="stream-watch",
                                                daemon=True)
                self._thread.start()
        try:
            yield watched
        finally:
            with self._lock:
                self._streams.discard(watched)

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            with self._lock:
                due = [(w, why) for w in self._streams if (why := w.expired(now))]
                for watched, _ in due:
                    self._streams.discard(watched)
            for watched, why in due:
                watched.cut = why
                self.cuts += 1
                log.warning("%s from %s cut: %s", watched.what, watched.context.peer(), why,
                            extra={"event": "stream.cut"})
                watched.context.cancel()  # wakes the handler blocked on the stream

    def close(self) -> None:
        """Stops the watch thread (streams are no longer cut)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(5)


def max_chunks(wire: Iterable[Spec]) -> int:
    """The most chunks an update of these wire tensors may take: one per tensor, plus
    its bytes in chunks of MIN_CHUNK_BYTES."""
    specs = list(wire)
    return len(specs) + math.ceil(sum(s.nbytes for s in specs) / MIN_CHUNK_BYTES)


def admitted_chunks(chunks: Iterable[fedge_pb2.TensorChunk],
                    wire: Iterable[Spec]) -> Iterator[fedge_pb2.TensorChunk]:
    """The chunks, refusing (InvalidUpdate) an empty one of a tensor that has bytes (it
    moves nothing forward) and more than max_chunks of them."""
    specs = list(wire)
    sizes = {s.name: s.nbytes for s in specs}
    limit = max_chunks(specs)
    for count, chunk in enumerate(chunks, 1):
        if count > limit:
            raise InvalidUpdate(f"the update is over {limit} chunks, more than this task's "
                                f"model needs (chunks of at least {MIN_CHUNK_BYTES} bytes)")
        if not chunk.data and sizes.get(chunk.name, 1) > 0:
            raise InvalidUpdate(f"an empty chunk of tensor {chunk.name[:64]!r}, which has "
                                "bytes: every chunk must carry data")
        yield chunk


def check_num_tensors(announced: int, wire: Iterable[Spec]) -> None:
    """Refuses a header announcing another tensor count than the task's update has (0,
    from devices that do not say, passes)."""
    expected = len(list(wire))
    if announced and announced != expected:
        raise InvalidUpdate(f"the header announces {announced} tensors; this task's "
                            f"update has {expected}")


class AddressSeats:
    """At most ``limit`` live anonymous devices per client address.

    Anonymous device ids are free to invent, so without this one host could join as a
    crowd. A device counts while the registry sees it live (its ``last_seen`` within
    ``timeout_s``); a device rejoining under its own id takes its old seat.
    """

    def __init__(self, limit: int, timeout_s: Callable[[], float]) -> None:
        self.limit = limit
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._by_address: dict[str, dict[str, Device]] = {}

    def check(self, address: str, device_id: str) -> None:
        """Raises Busy if address holds its limit of live anonymous devices (other than
        device_id)."""
        cutoff = time.monotonic() - self._timeout_s()
        with self._lock:
            seats = self._by_address.get(address, {})
            for other in [k for k, d in seats.items() if d.last_seen < cutoff]:
                del seats[other]  # gone quiet: the seat is free again
            if not seats:
                self._by_address.pop(address, None)
            taken = len(seats) - (device_id in seats)
            if taken >= self.limit:
                raise Busy(f"{address} already has {taken} live anonymous devices, the "
                           "limit for one address; enrol devices with tokens, or retry "
                           "when one has left")

    def seat(self, address: str, device: Device) -> None:
        """Records a joined anonymous device under its address."""
        with self._lock:
            self._by_address.setdefault(address, {})[device.device_id] = device

    def __len__(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._by_address.values())


def poll_slots(workers: int) -> int:
    """How many long polls may hold one of `workers` RPC threads at once: all but an
    eighth (at least 4), which stay free for joins, fetches and uploads."""
    return workers - max(4, workers // 8)


@dataclass(frozen=True)
class Guards:
    """Who may call and how much (see ServerConfig for meanings)."""

    allow_anonymous: bool = False
    max_uploads: int = 32
    rate_limit: float = 50.0
    rate_burst: float = 100.0
    max_polls: int = poll_slots(256)  # long polls held at once (ServerConfig.max_workers)
    stream_idle_s: float = 60.0
    stream_max_s: float = 900.0
    anonymous_per_address: int = 64
    partial_upload_bytes: int = 1 << 30
    partial_upload_ttl_s: float = 300.0
    spool_dir: str = ""  # where large updates are spooled ("": all in memory)
    spool_threshold_bytes: int = 64 << 20
    spool_budget_bytes: int = 8 << 30
