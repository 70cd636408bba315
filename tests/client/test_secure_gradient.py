"""The device's pseudo-gradient, streamed in blocks: the same vector, in the same order,
as flattening the model (fedge.secure.vector), for every update kind."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.client import secure
from fedge.secure import vector


@pytest.mark.parametrize("kind", ["weights", "delta", "gradient"])
def test_blocks_are_the_flattened_pseudo_gradient(kind: str) -> None:
    rng = np.random.default_rng(0)
    # Tensors longer than a block, shorter, empty, and an integer counter; out of order.
    shapes = {"z.w": (3, secure.BLOCK + 5), "a.b": (7,), "m.e": (0,)}
    model = {k: rng.normal(size=v).astype(np.float32) for k, v in shapes.items()}
    model["n.count"] = np.array([12], np.int64)
    update = {k: (v + rng.normal(size=v.shape).astype(v.dtype) if v.dtype.kind == "f"
                  else v + 3) for k, v in model.items()}
    blocks = secure.pseudo_gradient(kind, model, update)
    got = np.concatenate([b.copy() for b in blocks()])
    expected = {"weights": vector.flatten(model) - vector.flatten(update),
                "delta": -vector.flatten(update), "gradient": vector.flatten(update)}[kind]
    assert got.dtype == np.float64 and np.array_equal(got, expected)
    assert np.array_equal(np.concatenate([b.copy() for b in blocks()]), got)  # again
    assert all(b.size <= secure.BLOCK for b in blocks())


def test_weights_of_other_tensors_are_refused() -> None:
    with pytest.raises(ValueError, match="not the model's"):
        secure.pseudo_gradient("weights", {"a": np.zeros(2)}, {"b": np.zeros(2)})
