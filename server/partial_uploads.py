"""Update streams that broke before their end, kept so the device resumes from the last
chunk that arrived instead of sending the whole update again.

A device whose upload breaks asks ``UploadOffset`` how much the server holds of that
update (its task and SHA-256), then sends a new stream whose header says where its
chunks start (``UpdateHeader.resume_offset``). What is held is bounded so that no device
can grow the server's memory by breaking streams on purpose:

- one partial upload per device (a newer one replaces it), tied to a task the device
  was given and the SHA-256 its header announced;
- all partial uploads together within ``max_bytes`` (``--partial-upload-bytes``): one
  that does not fit is dropped, not kept (its device starts over);
- each expires ``ttl_s`` after its stream broke, or at its round's deadline, whichever
  comes first; expired ones are dropped whenever the store is used.

A stream that resumes takes its partial upload out of the store, so it is never held
twice, and puts it back only if it breaks again.

A large update is received into a spool file instead (fedge.server.spool): its part is
kept the same way, as the open file (no memory; the spool's own budget bounds the disk),
and a partial that is dropped, replaced or expired has its file deleted.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from fedge.protos import fedge_pb2
from fedge.refusals import EndedEarly, ResumeLost, StreamCut
from fedge.server.intake import Expected, Received, receive
from fedge.server.spool import (
    Spool,
    SpooledUpdate,
    SpoolReceived,
    accept_update,
    spool_for,
    spool_receive,
)
from fedge.tensors import Spec

# Re-exported: the service takes the spool's two hooks from here.
__all__ = ["PartialUploads", "accept_update", "spool_for"]

log = logging.getLogger(__name__)


@dataclass
class Partial:
    """One broken update stream: whose, which update, what arrived, until when."""

    device_id: str
    task_id: str
    sha256: str
    received: Received | SpoolReceived
    expires: float  # time.monotonic()


class PartialUploads:
    """Broken update streams by device, bounded in bytes and time."""

    def __init__(self, max_bytes: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic, spool: Spool | None = None,
                 ) -> None:
        self.max_bytes = max_bytes
        self.spool = spool  # where large updates are received (None: all in memory)
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._by_device: dict[str, Partial] = {}
        self.resumed = 0  # streams that went on from a kept partial upload

    @property
    def held(self) -> int:
        """Bytes of memory the kept partial uploads take."""
        with self._lock:
            self._expire()
            return sum(p.received.held for p in self._by_device.values())

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._by_device)

    def _expire(self) -> None:
        now = self._clock()
        for device_id in [d for d, p in self._by_device.items() if p.expires <= now]:
            self._by_device.pop(device_id).received.discard()

    def offset(self, device_id: str, task_id: str, sha256: str) -> int:
        """Data bytes held of this device's update (0: none, start over)."""
        with self._lock:
            self._expire()
            partial = self._by_device.get(device_id)
            if partial is None or (partial.task_id, partial.sha256) != (task_id, sha256):
                return 0
            return partial.received.offset

    def take(self, device_id: str, task_id: str, sha256: str, offset: int,
             wire: list[Spec], fresh: Callable[[], SpoolReceived] | None = None,
             ) -> Received | SpoolReceived:
        """What a stream starting at data byte offset goes on from: a fresh Received (or
        fresh() spool file) at 0, else the kept one, taken out of the store. ResumeLost
        (the device may start over) when nothing of this update is held at that offset."""
        with self._lock:
            self._expire()
            partial = self._by_device.pop(device_id, None)
        if partial is not None and (offset == 0 or (partial.task_id, partial.sha256)
                                    != (task_id, sha256)):
            partial.received.discard()  # replaced by this stream
            partial = None
        if offset == 0:
            return fresh() if fresh is not None else Received(wire)
        if partial is None:
            raise ResumeLost(f"no part of this update is held (it expired or was never "
                             f"kept); send it from byte 0, not {offset}")
        if partial.received.offset != offset:
            partial.received.discard()  # taken out and not resumable: dropped
            raise ResumeLost(f"the server holds {partial.received.offset} bytes of this "
                             f"update, not {offset}; ask UploadOffset again")
        self.resumed += 1
        return partial.received

    def keep(self, device_id: str, task_id: str, sha256: str,
             received: Received | SpoolReceived, deadline_unix: float) -> bool:
        """Keeps what arrived of a broken stream, until ttl_s from now or the round's
        deadline (unix seconds); False if there is nothing to keep or no room."""
        if received.offset == 0:
            return False
        expires = min(self._clock() + self.ttl_s,
                      self._clock() + (deadline_unix - time.time()))
        with self._lock:
            self._expire()
            old = self._by_device.pop(device_id, None)
            if old is not None:
                old.received.discard()
            used = sum(p.received.held for p in self._by_device.values())
            if expires <= self._clock() or used + received.held > self.max_bytes:
                log.info("%s: %d bytes of a broken update not kept (%d of %d bytes held)",
                         device_id, received.offset, used, self.max_bytes)
                return False
            self._by_device[device_id] = Partial(device_id, task_id, sha256, received,
                                                 expires)
        log.info("%s: kept %d bytes of a broken update until it resumes", device_id,
                 received.offset)
        return True

    def receive(self, device_id: str, header: fedge_pb2.UpdateHeader,
                chunks: Iterable[fedge_pb2.TensorChunk], expected: Expected,
                deadline_unix: float, hung_up: Callable[[], bool] = lambda: False,
                ) -> dict[str, np.ndarray] | SpooledUpdate:
        """The intake's filters 1-7 over a stream that may resume a broken one (header's
        resume_offset) and, if it breaks in turn (the link, not its content), leaves
        what arrived here for the next one. A large update goes to a spool file and
        comes back as a SpooledUpdate; a refused one leaves no file. hung_up: whether
        a stream that ended early was broken off by its link (then kept, like a cut)
        rather than ended by its device (then refused)."""
        fresh: Any = None
        if self.spool is not None and self.spool.applies(expected):
            fresh = functools.partial(self.spool.open, expected.wire)
        received = self.take(device_id, header.task_id, header.sha256,
                             header.resume_offset, expected.wire, fresh)
        try:
            if isinstance(received, SpoolReceived):
                return spool_receive(chunks, expected, header.sha256, received)
            return receive(chunks, expected, header.sha256, received)
        except EndedEarly as early:
            if not hung_up():  # its device ended it: refused, and it settles the task
                received.discard()
                raise
            self._keep_or_discard(device_id, header, received, deadline_unix)
            raise StreamCut(f"the update stream broke off: {early}") from None
        except (grpc.RpcError, StreamCut):
            self._keep_or_discard(device_id, header, received, deadline_unix)
            raise
        except BaseException:
            received.discard()
            raise

    def _keep_or_discard(self, device_id: str, header: fedge_pb2.UpdateHeader,
                         received: Received | SpoolReceived, deadline_unix: float) -> None:
        if not self.keep(device_id, header.task_id, header.sha256, received, deadline_unix):
            received.discard()
