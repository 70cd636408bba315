"""What a task handler talks to the server through: the stub and the session id of
one join, and the daemon's ``Link``, which makes every wait end when the daemon is
told to stop (``Stopped``) and paces retries with capped exponential backoff.
"""

from __future__ import annotations

import queue
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from fedge.protos import fedge_pb2, fedge_pb2_grpc
from fedge.wire import advert_message

if TYPE_CHECKING:
    from fedge.secure.device import KeyRing


class Stopped(Exception):
    """The stop event was set while the daemon was waiting."""


class Backoff:
    """Capped exponential backoff with jitter (between half and all of the cap)."""

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self.initial, self.maximum, self._rng = initial, maximum, rng
        self._attempt = 0

    def next_delay(self) -> float:
        """The next wait: double the last one's cap, up to the maximum, with jitter."""
        cap = min(self.maximum, self.initial * 2**self._attempt)
        self._attempt += 1
        return cap * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        """Starts again from the initial delay (after a success)."""
        self._attempt = 0


class Link:
    """The daemon's stop event, the RPC it cancels on stop, and its backoff."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self._stop = threading.Event()
        self._inflight: grpc.Future | None = None

    @property
    def stopping(self) -> bool:
        """stop() was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Ends every wait, cancelling the RPC in flight (safe in a signal handler)."""
        self._stop.set()
        inflight = self._inflight
        if inflight is not None:
            inflight.cancel()

    def wait(self, seconds: float) -> bool:
        """Sleeps up to seconds; True if stop() was called (at once or meanwhile)."""
        return self._stop.wait(seconds)

    def pause(self, seconds: float) -> None:
        """Sleeps seconds; raises Stopped if stop() is called meanwhile."""
        if self._stop.wait(max(seconds, 0.0)):
            raise Stopped()

    def call(self, future: grpc.Future) -> Any:
        """Waits for an RPC future's result; stop() cancels it (raises Stopped).

        The wait sleeps until the RPC ends: no timed polling, since a thousand
        simulated daemons waking every few milliseconds would starve the process.
        SimpleQueue.put may be called from a signal handler, Event.set may not.
        """
        done: queue.SimpleQueue[grpc.Future] = queue.SimpleQueue()
        future.add_done_callback(done.put)
        self._inflight = future
        try:
            if self._stop.is_set():  # stop() ran before _inflight was set
                future.cancel()
            done.get()
        finally:
            self._inflight = None
        if future.cancelled():  # only stop() cancels
            raise Stopped()
        return future.result()


@dataclass(frozen=True)
class Session:
    """One joined session, as task handlers see it.

    stub: the Federation stub over the daemon's channel; id: the session id every
    request names; link: waits and calls that end on stop; device_id: for the logs;
    crc_optional: the server checks an update by its stream's SHA-256 alone
    (JoinReply.update_crc_optional), so its chunks go without a CRC-32; keys: in a
    secure run (JoinReply.secure_rounds), the key pairs its polls advertise.
    """

    stub: fedge_pb2_grpc.FederationStub
    id: str
    link: Link
    device_id: str
    crc_optional: bool = False
    keys: KeyRing | None = None

    def advert(self) -> fedge_pb2.SecureAdvert | None:
        """A poll's advert: fresh public keys (None: the run is not secure)."""
        if self.keys is None:
            return None
        return advert_message(self.keys.fresh())

    def call(self, future: grpc.Future) -> Any:
        """Waits for an RPC future (see Link.call)."""
        return self.link.call(future)
