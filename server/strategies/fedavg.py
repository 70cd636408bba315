"""FedAvg: the example-weighted mean of client models.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas. "Communication-Efficient Learning of
Deep Networks from Decentralized Data". AISTATS 2017. https://arxiv.org/abs/1602.05629

:func:`weighted_mean` is the math; :class:`FedAvgFold` computes the same thing while
updates arrive, folding each into a running sum at once (one fused pass per update, see
:func:`scaled_add`), so the server holds one sum the size of the model however many
clients report. :class:`FedAvg` is the strategy, written as a server optimizer (SGD on
the mean pseudo-gradient, :func:`sgd_step`) that the FedAvg family subclasses
(FedAvgM, FedProx, FedOpt); it is one implementation of
:class:`fedge.server.strategies.spec.Strategy`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fedge.server.strategies.spec import Accumulator, Arrays, Strategy

log = logging.getLogger(__name__)

__all__ = ["Accumulator", "Arrays", "FedAvg", "FedAvgFold", "scaled_add", "sgd_step",
           "sgd_step_into",
           "weighted_mean"]


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
    # The fold sums pseudo-gradients (small differences from the global model, not the
    # weights themselves), so float32 keeps them to float32 rounding at memory speed;
    # wider or integer tensors (counters, running stats) are summed in float64.
    return np.dtype(np.float32) if dtype in (np.float16, np.float32) else np.dtype(np.float64)


@functools.cache
def _blas_axpy(dtype: np.dtype) -> Callable[..., Any] | None:
    """BLAS's fused y += a * x for dtype, from scipy when it is installed.

    scipy's OpenBLAS is held to one thread: axpy is memory-bound, and OpenBLAS's
    spinning worker threads collapse its speed by 50x on a busy machine (measured on 2
    cores shared with client trainers). Only scipy's own OpenBLAS is limited (the one in
    scipy.libs), not numpy's or torch's.
    """
    try:
        from scipy.linalg import blas
    except ImportError:
        return None
    try:
        from threadpoolctl import ThreadpoolController

        for lib in ThreadpoolController().lib_controllers:
            if "scipy" in lib.filepath and "numpy" not in lib.filepath:
                lib.set_num_threads(1)
    except ImportError:
        log.warning("threadpoolctl is not installed: BLAS may use spinning threads")
    return {np.dtype(np.float32): blas.saxpy, np.dtype(np.float64): blas.daxpy}.get(dtype)


def scaled_add(acc: np.ndarray, x: np.ndarray, weight: float) -> None:
    """acc += weight * x, in one streaming pass when it can be.

    numpy has no fused multiply-add: scaling x and then adding reads and writes the
    model twice. BLAS's axpy (scipy, which the training extra brings) does it in one
    pass, at close to the speed of copying the update; without scipy, x is scaled in
    place (it belongs to the fold by then) and added. x of another dtype than acc
    (float16 tensors, integer counters) goes through one temporary in acc's dtype.
    """
    if x.dtype != acc.dtype:
        acc += np.multiply(x, weight, dtype=acc.dtype)
        return
    axpy = _blas_axpy(acc.dtype)
    if axpy is not None and acc.flags.c_contiguous and x.flags.c_contiguous and acc.size:
        out = axpy(x.reshape(-1), acc.reshape(-1), a=weight)
        if np.may_share_memory(out, acc):
            return
        acc.reshape(-1)[:] = out  # BLAS copied instead of updating in place
        return
    if x.flags.writeable:
        np.multiply(x, weight, out=x)
        acc += x
    else:
        acc += np.multiply(x, weight, dtype=acc.dtype)


class FedAvgFold:
    """A running example-weighted sum of updates: O(model) memory, one pass per update.

    add() adds weight * update to the sum in one streaming pass (see scaled_add; the
    caller hands over the update, which may be scaled in place) and keeps no reference
    to it; result() divides by the total weight.
    """

    def __init__(self) -> None:
        self._sum: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self.total_weight = 0.0
        self.count = 0
        self._result: dict[str, np.ndarray] | None = None
        self._placed: dict[str, np.ndarray] = {}

    def place(self, buffers: Mapping[str, np.ndarray]) -> None:
        """Sums each named tensor into the given array (of the sum's dtype and the
        tensor's shape; views of the next model's blob) instead of a new one or the first
        update's (see fedge.server.next_blob)."""
        if self.count:
            raise ValueError("a fold is placed before its first update")
        self._placed = dict(buffers)

    def _first(self, name: str, array: np.ndarray, weight: float) -> None:
        self._dtypes[name] = array.dtype
        dtype = _accumulator_dtype(array.dtype)
        placed = self._placed.get(name)
        # The first update becomes the sum, scaled in place: no model-sized copy.
        own = array.dtype == dtype and array.flags.writeable
        self._sum[name] = np.multiply(array, weight, dtype=dtype,
                                      out=placed if placed is not None else
                                      array if own else None)

    def add_blocks(self, blocks: Iterable[tuple[str, int, np.ndarray]], weight: float,
                   shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Folds one update given as flat blocks (tensor, first element, values; each
        tensor covered whole, as from fedge.server.spool; shapes: each tensor's) with
        the same operations, element by element, as add()."""
        if weight <= 0:
            raise ValueError("weight must be positive")
        if self._result is not None:
            raise ValueError("the fold's result was taken: it takes no more updates")
        first = not self.count
        for name, start, block in blocks:
            acc = self._sum.get(name)
            if acc is None:
                if not first:
                    raise ValueError(f"tensor {name!r} is not in the first update")
                placed = self._placed.get(name)
                dtype = _accumulator_dtype(block.dtype)
                acc = placed if placed is not None else np.empty(shapes[name], dtype)
                self._sum[name], self._dtypes[name] = acc, block.dtype
            flat = acc.reshape(-1)[start : start + block.size]
            if first:
                np.multiply(block, weight, dtype=flat.dtype, out=flat)
            else:
                scaled_add(flat, block, weight)
        self.total_weight += weight
        self.count += 1

    def add(self, update: Mapping[str, np.ndarray], weight: float) -> None:
        """Folds update in with the given weight (its example count)."""
        if weight <= 0:
            raise ValueError("weight must be positive")
        if self._result is not None:
            raise ValueError("the fold's result was taken: it takes no more updates")
        if self._sum and update.keys() != self._sum.keys():
            raise ValueError("update's tensor names differ from the first update's")
        for name, array in update.items():
            acc = self._sum.get(name)
            if acc is None:
                self._first(name, array, weight)
                continue
            scaled_add(acc, array, weight)
        self.total_weight += weight
        self.count += 1

    def result(self) -> dict[str, np.ndarray]:
        """The weighted mean of everything folded, in the updates' dtypes. It is divided
        in place (the sum's memory becomes the mean's: no model-sized copy), so the fold
        takes no update after it; a second call returns the same arrays."""
        if not self.count:
            raise ValueError("no update has been folded")
        if self._result is not None:
            return self._result
        out = {}
        for name, acc in self._sum.items():
            mean = np.divide(acc, self.total_weight, out=acc)
            dtype = self._dtypes[name]
            if np.issubdtype(dtype, np.integer):
                mean = np.rint(mean)
            out[name] = mean.astype(dtype, copy=False)
        self._result = out
        return out


def sgd_step(weights: Arrays, gradient: Arrays, lr: float) -> dict[str, np.ndarray]:
    """weights - lr * gradient, tensor by tensor, in the weights' dtypes.

    With lr 1 and gradient the mean pseudo-gradient ``w_global - w_client`` this is
    exactly FedAvg's weighted mean of the client models. Integer tensors (counters) are
    computed in float64 and rounded.
    """
    out = {}
    for name, w in weights.items():
        if np.issubdtype(w.dtype, np.integer):
            new = np.rint(w.astype(np.float64) - lr * gradient[name].astype(np.float64))
            out[name] = new.astype(w.dtype)
        else:
            out[name] = (w - np.asarray(lr, w.dtype) * gradient[name].astype(w.dtype,
                                                                           copy=False))
    return out


def sgd_step_into(weights: Arrays, gradient: Arrays, lr: float) -> dict[str, np.ndarray]:
    """sgd_step, computed in gradient's float arrays where they are writable and of the
    weights' dtype (the same values bit for bit, without a model-sized copy); gradient
    is given up."""
    out = sgd_step({n: w for n, w in weights.items() if not _own(w, gradient[n])},
                   gradient, lr)
    for name, w in weights.items():
        if name not in out:
            g = gradient[name]
            np.multiply(g, np.asarray(lr, w.dtype), out=g)
            out[name] = np.subtract(w, g, out=g)
    return {name: out[name] for name in weights}


def _own(w: np.ndarray, g: np.ndarray) -> bool:
    return (w.dtype.kind == "f" and g.dtype == w.dtype and g.shape == w.shape
            and g.flags.writeable and not np.may_share_memory(g, w))


class FedAvg(Strategy[FedAvgFold]):
    """FedAvg as a server optimizer: plain SGD on the mean pseudo-gradient.

    Every update reaches the strategy as a pseudo-gradient (``w_global - w_client``, a
    delta negated, or a gradient as it is; see fedge.server.intake), is folded into a
    running example-weighted sum at once (O(model) memory), and at commit the server
    takes one step ``w <- w - server_lr * mean``. The subclasses change the step (FedAvgM,
    FedOpt) or what the clients are asked to do (FedProx).

    server_lr: the server step size (default 1.0: the client models' weighted mean).
    """

    name = "fedavg"

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = check_server_lr(server_lr)

    def new_accumulator(self) -> FedAvgFold:
        """An empty running sum."""
        return FedAvgFold()

    def aggregate(self, accumulator: FedAvgFold) -> dict[str, np.ndarray]:
        """The round's aggregate pseudo-gradient: the example-weighted mean."""
        return accumulator.result()

    def step(self, weights: Arrays, gradient: Arrays) -> dict[str, np.ndarray]:
        """The new global weights after one server SGD step on the aggregate (computed
        in the aggregate's own arrays, which are the round's and used once)."""
        return sgd_step_into(weights, gradient, self.server_lr)


def check_server_lr(server_lr: float) -> float:
    """server_lr, refused unless positive."""
    if server_lr <= 0:
        raise ValueError(f"server_lr must be positive, got {server_lr}")
    return server_lr
