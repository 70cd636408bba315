"""Waiting on a thread from the main thread stays open to Ctrl-C."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from fedge.threads import join_interruptibly


def test_a_sigint_that_lands_on_another_thread_still_interrupts_the_wait() -> None:
    """The kernel may hand a process's SIGINT to any of its threads; a plain join()
    would not wake until the worker ended (10 s here)."""
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, args=(10,), daemon=True)
    worker.start()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    assert worker.ident is not None
    ident = worker.ident
    kill = threading.Timer(0.3, lambda: signal.pthread_kill(ident, signal.SIGINT))
    try:
        started = time.monotonic()
        kill.start()
        with pytest.raises(KeyboardInterrupt):
            join_interruptibly(worker)
        assert time.monotonic() - started < 3
    finally:
        kill.cancel()
        stop.set()
        signal.signal(signal.SIGINT, previous)
    assert join_interruptibly(worker, timeout=5)


def test_a_join_with_a_timeout_says_whether_the_thread_ended() -> None:
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, args=(10,), daemon=True)
    worker.start()
    assert not join_interruptibly(worker, timeout=0.3)
    stop.set()
    assert join_interruptibly(worker, timeout=5)
