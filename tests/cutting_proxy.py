"""A real TCP proxy for tests: forwards 127.0.0.1 connections to a target and cuts the
connection it carries once a set number of bytes has passed in one direction."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class CuttingProxy:
    """Listens on 127.0.0.1 (port 0) and forwards each connection to target.

    direction: "down" counts bytes from the target to the caller, "up" the other way.
    After cut_after bytes have passed that way (over all connections together) the
    connection carrying them stops for hold_s (the receiver takes in what it was sent:
    a link does not break before its far end has read what arrived) and is then closed
    on both sides, up to `cuts` times; later connections pass untouched. `passed` and
    `cut_at` say what happened.
    """

    target: tuple[str, int]
    direction: str
    cut_after: int
    cuts: int = 1
    hold_s: float = 1.5
    passed: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    cut_at: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closing = False
        self._sockets: list[socket.socket] = []
        self._counted = 0  # bytes passed the watched way since the last cut
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                caller, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [caller, upstream]
            for src, dst, way in ((caller, upstream, "up"), (upstream, caller, "down")):
                threading.Thread(target=self._pump, args=(src, dst, way, caller, upstream),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str,
              caller: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    cut = False
                    if way == self.direction and len(self.cut_at) < self.cuts:
                        room = self.cut_after - self._counted
                        if len(data) >= room:
                            data, cut = data[:room], True
                        self._counted += len(data)
                    self.passed[way] += len(data)
                    if cut:
                        self.cut_at.append(self.passed[way])
                        self._counted = 0
                dst.sendall(data)
                if cut:
                    time.sleep(self.hold_s)
                    break
        except OSError:
            pass
        for sock in (caller, upstream):  # one side gone: the connection is gone
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stops listening and closes every connection."""
        self._closing = True
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
