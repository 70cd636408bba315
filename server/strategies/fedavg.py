"""FedAvg: the example-weighted mean of client models.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas. "Communication-Efficient Learning of
Deep Networks from Decentralized Data". AISTATS 2017. https://arxiv.org/abs/1602.05629

:func:`weighted_mean` is the math; :class:`FedAvgFold` computes the same thing while
updates arrive, folding each into a running sum at once, so the server holds one sum
the size of the model however many clients report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]


def weighted_mean(updates: Sequence[Arrays], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """sum_k w_k * x_k / sum_k w_k, tensor by tensor, computed in float64."""
    if not updates or len(updates) != len(weights):
        raise ValueError("need as many weights as updates, and at least one")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    out = {}
    for name in updates[0]:
        acc = np.zeros(updates[0][name].shape, np.float64)
        for update, weight in zip(updates, weights, strict=True):
            acc += weight * update[name].astype(np.float64)
        out[name] = (acc / total).astype(updates[0][name].dtype)
    return out


def _accumulator_dtype(dtype: np.dtype) -> np.dtype:
    # float32 sums are exact enough for model weights and keep the fold at memory speed;
    # wider or integer tensors (counters, running stats) are summed in float64.
    return np.dtype(np.float32) if dtype in (np.float16, np.float32) else np.dtype(np.float64)


class FedAvgFold:
    """A running example-weighted sum of updates: O(model) memory, one pass per update.

    add() scales the given arrays in place (the caller hands over ownership) and adds
    them to the sum; result() divides by the total weight.
    """

    def __init__(self) -> None:
        self._sum: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self.total_weight = 0.0
        self.count = 0

    def add(self, update: Mapping[str, np.ndarray], weight: float) -> None:
        """Folds update in with the given weight (its example count)."""
        if weight <= 0:
            raise ValueError("weight must be positive")
        if self._sum and update.keys() != self._sum.keys():
            raise ValueError("update's tensor names differ from the first update's")
        for name, array in update.items():
            acc = self._sum.get(name)
            if acc is None:
                self._dtypes[name] = array.dtype
                self._sum[name] = np.multiply(array, weight,
                                              dtype=_accumulator_dtype(array.dtype))
                continue
            if array.dtype == acc.dtype and array.flags.writeable:
                np.multiply(array, weight, out=array)  # no temporary of the model's size
                acc += array
            else:
                acc += np.multiply(array, weight, dtype=acc.dtype)
        self.total_weight += weight
        self.count += 1

    def result(self) -> dict[str, np.ndarray]:
        """The weighted mean of everything folded so far, in the updates' dtypes."""
        if not self.count:
            raise ValueError("no update has been folded")
        out = {}
        for name, acc in self._sum.items():
            mean = acc / self.total_weight
            dtype = self._dtypes[name]
            if np.issubdtype(dtype, np.integer):
                mean = np.rint(mean)
            out[name] = mean.astype(dtype, copy=False)
        return out
