"""Model-sized scratch vectors, handed back and reused instead of allocated afresh.

A secure round's device works through several model-sized temporaries (the keystream
block of the masks, the float64 block of its update). Allocated per use, each is a new
mapping from the kernel: every page faults once and is zeroed before it is written. At
1M parameters that was a tenth of a 100-device simulation's CPU (the kernel's
``clear_page`` above AES itself in a profile), and a daemon paid it again every round.
A vector borrowed from :data:`POOL` is given back when the ``with`` block ends, and the
next borrower of the same size and type (the next step, the next round, or in a
simulation the next device) gets it with its pages already in place.

The pool keeps at most ``keep_bytes`` of vectors that nobody holds; a vector given back
beyond that is freed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class ScratchPool:
    """Free vectors by (dtype, size), bounded by bytes."""

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self._free: dict[tuple[str, int], list[np.ndarray]] = {}
        self._kept = 0
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, size: int, dtype: type | np.dtype) -> Iterator[np.ndarray]:
        """A contiguous vector of size entries (contents undefined) for the block's
        duration; the caller must not keep a reference past it."""
        key = (np.dtype(dtype).str, int(size))
        with self._lock:
            free = self._free.get(key)
            vector = free.pop() if free else None
            if vector is not None:
                self._kept -= vector.nbytes
        if vector is None:
            vector = np.empty(size, dtype)
        try:
            yield vector
        finally:
            with self._lock:
                if self._kept + vector.nbytes <= self.keep_bytes:
                    self._free.setdefault(key, []).append(vector)
                    self._kept += vector.nbytes

    @property
    def kept_bytes(self) -> int:
        """Bytes of the vectors the pool holds for the next borrower."""
        return self._kept


# 256 MiB: a simulation's devices at 1M parameters hold a few dozen 4-8 MiB vectors at
# once; a daemon holds two.
POOL = ScratchPool(256 << 20)
