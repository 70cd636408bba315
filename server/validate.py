"""Checks on the values of a decoded update, before it may touch the aggregate.

Pure functions over named arrays: the stream-level checks (names, shapes, dtypes, sizes,
checksums) happen while it is assembled; these look at what the numbers are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, MutableMapping

import numpy as np

from fedge.refusals import InvalidUpdate

log = logging.getLogger(__name__)


def check_finite(arrays: Mapping[str, np.ndarray]) -> None:
    """Refuses an update holding NaN or infinite values, naming the first such tensor."""
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            what = "NaN" if np.isnan(array).any() else "infinite values"
            raise InvalidUpdate(f"tensor {name!r} holds {what}")


def distance(update: Mapping[str, np.ndarray],
             reference: Mapping[str, np.ndarray] | None = None) -> float:
    """The L2 norm of update - reference (reference None: of update itself) over all
    floating tensors, summed in float64."""
    total = 0.0
    for name, array in update.items():
        if array.dtype.kind != "f":
            continue
        diff = array if reference is None else array - reference[name]
        diff = diff.ravel().astype(np.float64, copy=False)
        total += float(np.dot(diff, diff))
    return math.sqrt(total)


def bound_norm(update: MutableMapping[str, np.ndarray],
               reference: Mapping[str, np.ndarray] | None, max_norm: float,
               action: str) -> float:
    """Enforces ``distance(update, reference) <= max_norm`` (0 means no bound).

    action "refuse" raises InvalidUpdate; "clip" scales update - reference down to the
    bound, in place. Returns the distance before any clipping.
    """
    norm = distance(update, reference)
    if max_norm <= 0 or norm <= max_norm:
        return norm
    if action == "refuse":
        raise InvalidUpdate(f"update norm {norm:.4g} exceeds the bound of {max_norm:.4g} "
                             "(--max-update-norm)")
    scale = max_norm / norm
    for name, array in update.items():
        if array.dtype.kind != "f":
            continue
        if reference is None:
            array *= scale
        else:
            ref = reference[name]
            array -= ref
            array *= scale
            array += ref
    log.info("clipped an update of norm %.4g to %.4g", norm, max_norm)
    return norm
