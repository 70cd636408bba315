"""The device's held-out slice: examples chosen by a hash of their own content, never
trained on, for federated evaluation and personalization.

Membership depends on each example alone (its bytes and label), not on the order files
were read or on which other files exist, so a rescan that finds new files never moves an
old example between the training part and the held-out part."""

from __future__ import annotations

import numpy as np

HOLDOUT_FRACTION = 0.1  # of a device's examples, the default held-out share
_SEED = 0x5EED


def content_keys(x: np.ndarray, y: np.ndarray, rows: int = 65536) -> np.ndarray:
    """A 64-bit hash per example of its bytes and label (uint64; its high bits are
    close to uniform, which is all `holdout_mask` compares)."""
    flat = np.ascontiguousarray(x).reshape(len(x), -1).view(np.uint8)
    weights = np.random.default_rng(_SEED).integers(
        1, 2**63, size=flat.shape[1] + 1, dtype=np.uint64) | np.uint64(1)
    keys = np.empty(len(x), dtype=np.uint64)
    with np.errstate(over="ignore"):  # the hash wraps modulo 2**64 on purpose
        for start in range(0, len(x), rows):
            chunk = flat[start:start + rows].astype(np.uint64)
            mixed = (chunk * weights[:-1]).sum(axis=1, dtype=np.uint64)
            mixed += y[start:start + rows].astype(np.uint64) * weights[-1]
            mixed ^= mixed >> np.uint64(29)
            keys[start:start + rows] = mixed * np.uint64(0xBF58476D1CE4E5B9)
    return keys


def holdout_mask(x: np.ndarray, y: np.ndarray,
                 fraction: float = HOLDOUT_FRACTION) -> np.ndarray:
    """True for the examples in the held-out slice: those whose content hash falls in the
    lowest `fraction` of the 64-bit range (about `fraction` of them, decided per example)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or len(y) == 0:
        return np.zeros(len(y), dtype=bool)
    bound = np.uint64(min(int(fraction * 2.0**64), 2**64 - 1))
    return content_keys(x, y) < bound


def split_holdout(x: np.ndarray, y: np.ndarray, fraction: float = HOLDOUT_FRACTION
                  ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_held, y_held)): the examples split by `holdout_mask`,
    each part in its original order."""
    held = holdout_mask(x, y, fraction)
    return (x[~held], y[~held]), (x[held], y[held])
