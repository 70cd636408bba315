"""Flower's parameters (an ordered list of arrays) to fedge's named tensors and back.

A Flower NumPyClient's ``get_parameters`` returns the model's arrays in a fixed order,
the order of its ``state_dict`` in every Flower example. fedge names each tensor: the
task's model gives the names in that same order; without a task, ``param_0`` ...
``param_N``. Saved parameters (``.npz`` from ``np.savez(path, *arrays)`` or with names,
or a safetensors file) are read the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedge.errors import FedgeError
from fedge.tensors import Spec


def default_names(count: int) -> list[str]:
    """param_0 ... param_{count-1}: the names of a list with no task to name it."""
    return [f"param_{i}" for i in range(count)]


def to_named(arrays: Sequence[np.ndarray], specs: Sequence[Spec]) -> dict[str, np.ndarray]:
    """Names a Flower parameter list by the task's tensors (same order); FedgeError
    unless the count, shapes and dtypes agree."""
    if len(arrays) != len(specs):
        raise FedgeError(f"the Flower client has {len(arrays)} parameter arrays, the "
                         f"task's model {len(specs)} tensors: they must be the same model")
    out = {}
    for i, (array, spec) in enumerate(zip(arrays, specs, strict=True)):
        a = np.asarray(array)
        if tuple(a.shape) != tuple(spec.shape):
            raise FedgeError(f"Flower parameter {i} has shape {list(a.shape)}, the task's "
                             f"{spec.name} {list(spec.shape)}: the list must follow the "
                             "model's state_dict order")
        out[spec.name] = np.ascontiguousarray(a.astype(spec.dtype, copy=False))
    return out


def to_list(named: Mapping[str, np.ndarray], specs: Sequence[Spec]) -> list[np.ndarray]:
    """The Flower parameter list of named tensors, in the task's order."""
    return [named[spec.name] for spec in specs]


def read_params(path: Path) -> list[np.ndarray] | dict[str, np.ndarray]:
    """Saved Flower parameters: a list (``.npz`` of arr_0.., the order np.savez(*arrays)
    keeps) or named arrays (``.npz`` with names, ``.safetensors``)."""
    if not path.is_file():
        raise FedgeError(f"{path} is not a file; give the .npz or .safetensors of the "
                         "final parameters")
    if path.suffix == ".safetensors":
        from fedge.tensors import from_blob

        return from_blob(path.read_bytes())[0]
    if path.suffix != ".npz":
        raise FedgeError(f"{path}: give a .npz or .safetensors file")
    with np.load(path, allow_pickle=False) as npz:
        keys = list(npz.files)
        if keys and all(k == f"arr_{i}" for i, k in enumerate(keys)):
            return [npz[f"arr_{i}"] for i in range(len(keys))]
        return {k: npz[k] for k in keys}


def name_params(params: Sequence[np.ndarray] | Mapping[str, np.ndarray],
                specs: Sequence[Spec]) -> dict[str, np.ndarray]:
    """Saved parameters named by the task's tensors: a list (or arrays named by
    position: ``0``.., ``arr_0``.., ``param_0``..) in the task's order, or arrays that
    already carry the task's names."""
    if isinstance(params, Mapping):
        if set(params) == {s.name for s in specs}:
            return to_named([params[s.name] for s in specs], specs)
        positions = {_position(k): v for k, v in params.items()}
        if sorted(k if k is not None else -1 for k in positions) != list(range(len(params))):
            raise FedgeError(f"the saved parameters are named {sorted(params)[:4]}..., "
                             "neither the task's tensor names nor positions")
        params = [positions[i] for i in range(len(params))]
    return to_named(list(params), specs)


def _position(key: str) -> int | None:
    """The list position a key names ("3", "arr_3", "param_3"), or None."""
    tail = key.rpartition("_")[2] if key.startswith(("arr_", "param_")) else key
    return int(tail) if tail.isdigit() else None
