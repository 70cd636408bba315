"""FedAvg's running sum kept in the next model's blob, so a commit copies nothing.

A commit turns the round's sum into the mean, steps the global model with it (in the
sum's own arrays, fedge.server.strategies.fedavg.sgd_step_into) and serializes the new
model as the blob devices download and the checkpoint holds. Serializing copies the
model once more, so at that moment the server holds the old model, the new one and its
blob: 3x the model. For a large model (one whose updates are spooled,
fedge.server.spool) the round instead lays out the next blob when it opens, header
included, and the sum of each tensor is a view of its place in it; the mean and the
step happen there, and at commit the blob is already written: 2x at the peak.

The header is the one :func:`fedge.tensors.to_blob` writes for the same tensors and
metadata, so the blob is the same bytes either way. Only for plain FedAvg's step (and
FedProx, which changes nothing on the server): other steps build new arrays (momentum,
Adam), which are then copied in, and must not find their state in the blob.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedge.server.strategies.fedavg import FedAvg, FedAvgFold, _accumulator_dtype
from fedge.tensors import blob_head, from_blob


def blob_layout(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str],
                ) -> tuple[bytearray, dict[str, np.ndarray]]:
    """A zeroed blob laid out as to_blob lays out tensors shaped like arrays, and a
    writable view of each tensor's place in it."""
    head, ranges = blob_head(arrays, metadata)
    blob = bytearray(len(head) + max((end for _, end in ranges.values()), default=0))
    blob[:len(head)] = head
    views = {}
    for name, (begin, end) in ranges.items():
        dtype = arrays[name].dtype.newbyteorder("<")
        views[name] = np.frombuffer(memoryview(blob)[len(head) + begin : len(head) + end],
                                    dtype).reshape(arrays[name].shape)
    return blob, views


def place_sum(strategy: Any, fold: Any, global_model: Mapping[str, np.ndarray],
              task_name: str, round_: int) -> bytearray | None:
    """Lays out round_'s blob and has fold sum into it, where the strategy's step is
    plain FedAvg's (else None: the fold and the commit go on as usual)."""
    if (type(fold) is not FedAvgFold or type(strategy).step is not FedAvg.step
            or type(strategy).aggregate is not FedAvg.aggregate):
        return None
    blob, views = blob_layout(global_model, {"task": task_name, "round": str(round_)})
    # Tensors whose sum has another dtype (float16, integer counters) sum apart.
    fold.place({n: v for n, v in views.items()
                if _accumulator_dtype(global_model[n].dtype) == v.dtype})
    return blob


def filled_blob(blob: bytearray, weights: Mapping[str, np.ndarray]) -> bytearray:
    """The laid-out blob holding weights: those computed in place are there already,
    the others are copied in."""
    places, _ = from_blob(blob, copy=False)
    for name, w in weights.items():
        if not np.may_share_memory(places[name], w):
            np.copyto(places[name], w, casting="no")
    return blob
