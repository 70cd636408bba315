"""Stopping a long-running command cleanly on SIGTERM or SIGINT.

The first signal of each kind asks the command to stop cleanly (a second one kills).
SIGTERM is how systemd stops a service, so a clean stop on it is a success (exit 0);
SIGINT is a person pressing Ctrl-C, and ends in 130 like any interrupted command.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("fedge")


class CleanStop:
    """Calls stop on the first SIGTERM or SIGINT, and remembers whether it was SIGINT."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self.interrupted = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received %s; stopping cleanly (send again to force)",
                    signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        if signum == signal.SIGINT:
            self.interrupted = True
        self._stop()

    def raise_if_interrupted(self) -> None:
        """After the clean stop: a SIGINT ends the command as interrupted (exit 130)."""
        if self.interrupted:
            raise KeyboardInterrupt
