"""How much a stale update counts in buffered asynchronous training (FedBuff).

Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation", AISTATS 2022:
a device trains from model version ``v`` while the server goes on committing versions;
when its update arrives at version ``v'`` its staleness is ``s = v' - v``. Each update is
folded at once with weight ``w(s) * n`` (``n`` its example count) and every ``K`` updates
(the buffer) the server steps with

    g = sum_i w(s_i) n_i g_i / sum_i n_i

so a buffer of fresh updates is FedAvg's example-weighted mean, and staleness only
shrinks the step (never makes a stale update weigh more than a fresh one). Functions of s:

=========== ================================ ===========================================
name        w(s)                             note
=========== ================================ ===========================================
sqrt        1 / sqrt(1 + s)                  the default; polynomial with a = 1/2
polynomial  (1 + s) ** -a                    a: ``staleness_exponent``
constant    1                                staleness ignored (max_staleness still holds)
hinge       1 for s <= b, else 1/(1 + s - b)  b: ``staleness_exponent`` (Xie et al. 2019)
=========== ================================ ===========================================
"""

from __future__ import annotations

import math

from fedge.config.asynchronous import STALENESS


def staleness_weight(kind: str, staleness: int, exponent: float = 0.5) -> float:
    """w(s) of the named function (see the module's table); s must be >= 0."""
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    if kind == "sqrt":
        return 1.0 / math.sqrt(1.0 + staleness)
    if kind == "polynomial":
        return float((1.0 + staleness) ** -exponent)
    if kind == "constant":
        return 1.0
    if kind == "hinge":
        return 1.0 if staleness <= exponent else 1.0 / (1.0 + staleness - exponent)
    raise ValueError(f"unknown staleness function {kind!r}; use one of {STALENESS}")


def step_scale(folded_weight: float, examples: float) -> float:
    """The factor that turns the strategy's weighted mean of a buffer (weights w(s) n)
    into FedBuff's sum w(s) n g / sum n: folded_weight / examples (1.0 when empty)."""
    return folded_weight / examples if examples > 0 else 1.0
