"""Speed of ONNX models under onnxruntime on one CPU thread.

Models being compared are timed call by call in round robin, so whatever else the
machine runs disturbs them alike, and a low percentile of the per-call times (the 10th
by default) is reported: interference only ever adds time, so the low end is the
closest estimate of each model's own cost. The median is there to show the spread.
"""

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


def call_times_ms(models: Sequence[bytes], x: np.ndarray, calls: int = 2000,
                  input_name: str = "input") -> list[np.ndarray]:
    """Each model's per-call times in milliseconds on batch x, the models taking turns."""
    feed = {input_name: np.ascontiguousarray(x)}
    runs = [session(m).run for m in models]  # type: ignore[attr-defined]
    for run in runs:  # warm-up
        for _ in range(max(10, calls // 20)):
            run(None, feed)
    times = np.empty((len(runs), calls))
    clock = time.perf_counter_ns
    for i in range(calls):
        for j, run in enumerate(runs):
            started = clock()
            run(None, feed)
            times[j, i] = clock() - started
    return list(times / 1e6)


def latencies_ms(models: Sequence[bytes], x: np.ndarray, calls: int = 2000,
                 percentile: float = 10.0, input_name: str = "input") -> list[float]:
    """Each model's latency on batch x: a percentile of its round-robin call times."""
    return [float(np.percentile(t, percentile))
            for t in call_times_ms(models, x, calls, input_name)]


def batch_of(x: np.ndarray, size: int) -> np.ndarray:
    """A batch of exactly size rows taken (cyclically) from x."""
    return np.ascontiguousarray(x[np.arange(size) % len(x)])
