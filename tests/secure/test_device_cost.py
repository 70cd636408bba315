"""A device's secure-aggregation work stays on its own thread: no BLAS call whose worker
threads spin after it (np.linalg.norm's dot did, for 3x the norm's own CPU)."""

from __future__ import annotations

import time

import numpy as np

from fedge.secure import quantize


def test_clipping_uses_no_cpu_beyond_its_own_thread() -> None:
    vector = np.random.default_rng(0).normal(size=100_000)
    process, thread = time.process_time(), time.thread_time()
    for _ in range(20):
        clipped = quantize.clip_norm(vector, 1.0)
        time.sleep(0.01)  # the window in which BLAS threads would spin
    process, thread = time.process_time() - process, time.thread_time() - thread
    assert abs(float(np.sqrt(np.sum(clipped**2))) - 1.0) < 1e-9
    assert process <= 2 * thread + 0.05, (process, thread)
