"""Every kind of update becomes one thing, a pseudo-gradient, before aggregation.

``weights`` (the client's new model w_k): ``g = w_global - w_k``; ``delta``
(``w_k - w_global``): ``g = -delta``; ``gradient`` (the client's mean loss gradient at
w_global, no local step): ``g`` as sent. A server optimizer then steps
``w <- w - lr * aggregate(g)``: with lr 1 and weights this is FedAvg exactly.

The server applies this to the round's *aggregate* rather than to each update: every
aggregate here (weighted means, coordinate-wise medians and trimmed means, Krum's
distance-based selection) commutes with the map ``x -> w_global - x`` and with negation,
so ``aggregate(pseudo_gradient(x_k)) == pseudo_gradient(aggregate(x_k))``, and the
conversion costs one pass per round instead of one per update.
tests/server/test_aggregation_path.py checks the two orders agree for every strategy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedge.wire import UPDATE_KIND_NAMES as UPDATE_KINDS


def pseudo_gradient(kind: str, global_weights: Mapping[str, np.ndarray],
                    update: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pseudo-gradient of update, reusing its arrays (the caller gives them up).

    Floating-point tensors stay float32 (or their own float dtype); integer tensors
    (counters) become float64.
    """
    if kind not in UPDATE_KINDS:
        raise ValueError(f"unknown update kind {kind!r}; use one of {UPDATE_KINDS}")
    out = {}
    for name, x in update.items():
        if x.dtype.kind != "f" or not x.flags.writeable:
            x = x.astype(np.float64 if x.dtype.kind != "f" else x.dtype)
        if kind == "weights":
            np.subtract(global_weights[name], x, out=x, casting="unsafe")
        elif kind == "delta":
            np.negative(x, out=x)
        out[name] = x
    return out
