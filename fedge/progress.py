"""A live progress bar for rounds on a terminal: round, accuracy, elapsed time.

The CLI uses it only when stderr is a TTY; a log file or a pipe gets one plain line per
round instead. A ticker thread redraws the bar twice a second so the elapsed time moves
while a round is in flight.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TextIO


class RoundBar:
    """Draws ``[#####-----] round 3/10  accuracy 0.9123  elapsed 4.2 s`` on stream."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total = max(1, total)
        self.stream = stream
        self.width = width
        self.round = 0
        self.accuracy: float | None = None
        self.clients: int | None = None
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)

    def __enter__(self) -> RoundBar:
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._ticker.join(timeout=2)
        with self._lock:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def __call__(self, record: Any) -> None:
        """Takes a committed round's record (round, accuracy, clients), again when its
        evaluation ends (the accuracy None until then: the last one measured stays)."""
        with self._lock:
            self.round = max(self.round, record.round)
            if record.accuracy is not None:
                self.accuracy = record.accuracy
            if record.round == self.round:
                self.clients = record.clients
            self._draw()

    def line(self) -> str:
        """The bar as text (without the carriage return)."""
        done = int(self.width * min(self.round, self.total) / self.total)
        accuracy = "  -   " if self.accuracy is None else f"{self.accuracy:.4f}"
        clients = "" if self.clients is None else f"  clients {self.clients}"
        return (f"[{'#' * done}{'-' * (self.width - done)}] round {self.round}/{self.total}"
                f"  accuracy {accuracy}{clients}  elapsed "
                f"{time.monotonic() - self._started:.1f} s")

    def _draw(self) -> None:
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._draw()


class RoundLines:
    """One plain line per committed round on stream: what a log file or a pipe gets
    instead of the bar."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self._started = time.monotonic()
        self._seen: set[int] = set()

    def __call__(self, record: Any) -> None:
        """Takes a committed round's record (round, accuracy, loss, clients, seconds):
        a line at its commit, and one more when its evaluation ends after the commit."""
        elapsed = f"(elapsed {time.monotonic() - self._started:.1f} s)"
        if record.round in self._seen:
            print(f"round {record.round:>3}/{self.total}  evaluated: accuracy "
                  f"{record.accuracy:.4f}  loss {record.loss:.4f}  {elapsed}",
                  file=self.stream, flush=True)
            return
        self._seen.add(record.round)
        measured = record.accuracy is not None
        print(f"round {record.round:>3}/{self.total}  "
              + (f"accuracy {record.accuracy:.4f}  loss {record.loss:.4f}  " if measured
                 else "")
              + f"clients {record.clients}  {record.seconds:5.2f} s  {elapsed}",
              file=self.stream, flush=True)
