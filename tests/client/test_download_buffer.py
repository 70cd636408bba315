"""A daemon writes a download into the last one's buffer only when nothing views it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from fedge.client.daemon import Daemon
from fedge.tensors import from_blob, to_blob


def _spare(holder: SimpleNamespace) -> bytearray | None:
    return Daemon._spare(holder)  # type: ignore[arg-type]  # it reads only _last_blob


def _holder() -> SimpleNamespace:
    blob = bytearray(to_blob({"w": np.arange(16, dtype=np.float32).reshape(4, 4)}))
    return SimpleNamespace(_last_blob=blob)


def test_a_buffer_nothing_views_is_handed_on_once() -> None:
    holder = _holder()
    size = len(holder._last_blob)
    spare = _spare(holder)
    assert isinstance(spare, bytearray) and holder._last_blob is None
    assert len(spare) == size and from_blob(spare)[0]["w"][3, 3] == 15  # as it was
    assert _spare(holder) is None  # handed on once, never to two downloads


def test_a_buffer_still_viewed_is_not_reused() -> None:
    for view in (lambda b: from_blob(b, copy=False)[0]["w"][1:],  # a numpy slice
                 lambda b: torch.from_numpy(from_blob(b, copy=False)[0]["w"]),
                 lambda b: memoryview(b)[8:16]):
        holder = _holder()
        alive = view(holder._last_blob)
        assert _spare(holder) is None and holder._last_blob is None
        del alive
