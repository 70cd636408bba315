"""A model's tensors as one flat float64 vector and back (the order is the names' sorted
order, so the server and every device flatten alike)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def flatten(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The tensors, in sorted name order, as one float64 vector."""
    if not arrays:
        return np.zeros(0, np.float64)
    return np.concatenate([np.asarray(arrays[name], np.float64).reshape(-1)
                           for name in sorted(arrays)])


def unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """vector cut into tensors with the names, shapes and dtypes of like (integer
    tensors rounded)."""
    out, offset = {}, 0
    for name in sorted(like):
        ref = like[name]
        part = vector[offset:offset + ref.size].reshape(ref.shape)
        offset += ref.size
        if np.issubdtype(ref.dtype, np.integer):
            part = np.rint(part)
        out[name] = part.astype(ref.dtype)
    if offset != vector.size:
        raise ValueError(f"a vector of {vector.size} entries for {offset} parameters")
    return out


def size_of(arrays: Mapping[str, np.ndarray]) -> int:
    """Entries in the flattened tensors."""
    return sum(int(np.asarray(a).size) for a in arrays.values())
