"""Waiting on threads from the main thread without going deaf to Ctrl-C, and how many
cores the process's threads may use."""

from __future__ import annotations

import os
import threading
import time

# How often a waiting main thread wakes to run the signal handlers that are due.
TICK_S = 0.2


def join_interruptibly(thread: threading.Thread, timeout: float | None = None) -> bool:
    """Joins thread in short timed waits; True once it has ended, False at timeout.

    A plain ``join()`` blocks the main thread in one untimed lock wait, and a SIGINT
    that the kernel delivers to another thread (gRPC's, torch's) does not wake it:
    CPython runs signal handlers only in the main thread, so Ctrl-C went unanswered
    until the joined thread ended on its own (a simulation ran on for 135 rounds).
    """
    end = None if timeout is None else time.monotonic() + timeout
    while thread.is_alive():
        left = TICK_S if end is None else min(TICK_S, end - time.monotonic())
        if left <= 0:
            return False
        thread.join(left)
    return True


def cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
