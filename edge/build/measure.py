"""Speed of ONNX models under onnxruntime on one CPU thread. Models being compared are
timed in turns (interleaved), best of N, so that a busy machine slows them alike."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np


def session(model_bytes: bytes) -> object:
    """A one-thread CPU session (the comparable setting across models)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def latencies_ms(models: Sequence[bytes], x: np.ndarray, runs: int = 300, repeats: int = 7,
                 input_name: str = "input") -> list[float]:
    """Milliseconds per call on batch x for each model: the best over `repeats` turns of
    the mean of `runs` calls, the models taking turns within each repeat."""
    feed = {input_name: np.ascontiguousarray(x)}
    calls = [session(m).run for m in models]  # type: ignore[attr-defined]
    for call in calls:  # warm-up
        for _ in range(max(10, runs // 10)):
            call(None, feed)
    best = [float("inf")] * len(calls)
    for _ in range(repeats):
        for i, call in enumerate(calls):
            started = time.perf_counter()
            for _ in range(runs):
                call(None, feed)
            best[i] = min(best[i], (time.perf_counter() - started) / runs)
    return [b * 1e3 for b in best]


def batch_of(x: np.ndarray, size: int) -> np.ndarray:
    """A batch of exactly size rows taken (cyclically) from x."""
    return np.ascontiguousarray(x[np.arange(size) % len(x)])
