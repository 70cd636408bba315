"""Update encodings on the client -> server path: f32, f16, int8 and top-k.

Each encoding is a pair of pure functions over named numpy arrays: ``encode`` turns a
float32 update into the arrays that travel (still named, typed, shaped, pickle-free, so
they go through :func:`fedge.tensors.iter_chunks` like any update), and ``decode`` turns
what arrived back into float32 arrays of the task's shapes. :func:`wire_specs` tells the
receiver exactly which tensors to expect, so :class:`fedge.tensors.TensorAssembler`
checks names, dtypes and shapes before a byte is decoded.

What travels, per floating-point tensor ``NAME`` (other dtypes always travel as they are):

* ``f32``: ``NAME`` as float32.
* ``f16``: ``NAME`` as float16.
* ``int8``: ``NAME`` as int8 plus ``NAME@scale``, float32: symmetric quantization,
  ``x ~ q * scale`` with ``q`` in [-127, 127]. The scale is per output channel (axis 0,
  one scale per row) for tensors of two or more dimensions, per tensor otherwise.
* ``topk``: ``NAME@index`` (int32 flat indices, int64 past 2**31 entries) and
  ``NAME@value`` (float32): the ``ceil(fraction * size)`` largest-magnitude entries;
  everything else decodes to zero. :class:`ErrorFeedback` carries what was dropped
  into the client's next update, so nothing is lost, only delayed.

The steps compose in a visible order on the client (feedback, then encode) and on the
server (assemble, then decode), as separate small functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from fedge.tensors import Spec, TensorError
from fedge.wire import ENCODING_NAMES

ENCODINGS = ENCODING_NAMES
SEP = "@"  # reserved in tensor names: NAME@scale, NAME@index, NAME@value
INT8_MAX = 127

Arrays = Mapping[str, np.ndarray]


def _is_float(dtype: str | np.dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def topk_count(size: int, fraction: float) -> int:
    """How many entries top-k keeps of a tensor of size entries (at least one)."""
    if size == 0:
        return 0
    return min(size, max(1, math.ceil(fraction * size)))


def _index_dtype(size: int) -> str:
    return "int32" if size < 2**31 else "int64"


def _scale_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0],) if len(shape) >= 2 else (1,)


def wire_specs(specs: Iterable[Spec], encoding: str, fraction: float = 0.1) -> list[Spec]:
    """The tensors an update of these task tensors travels as, in this encoding."""
    if encoding not in ENCODINGS:
        raise TensorError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    out: list[Spec] = []
    for s in specs:
        if SEP in s.name:
            raise TensorError(f"tensor name {s.name!r} contains {SEP!r}, which update "
                              "encodings reserve")
        if not _is_float(s.dtype) or encoding == "f32":
            out.append(s)
        elif encoding == "f16":
            out.append(Spec(s.name, "float16", s.shape))
        elif encoding == "int8":
            out.append(Spec(s.name, "int8", s.shape))
            out.append(Spec(s.name + SEP + "scale", "float32", _scale_shape(s.shape)))
        else:
            size = int(np.prod(s.shape, dtype=np.int64))
            k = topk_count(size, fraction)
            out.append(Spec(s.name + SEP + "index", _index_dtype(size), (k,)))
            out.append(Spec(s.name + SEP + "value", "float32", (k,)))
    return out


# ---------------------------------------------------------------- int8

def quantize_int8(x: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization: (q, scale) with x ~ q * scale, q in [-127, 127].

    per_channel: one scale per slice along axis 0 (shape (x.shape[0],)); otherwise one
    scale for the whole tensor (shape (1,)). An all-zero slice gets scale 0.
    """
    x = np.asarray(x, np.float32)
    if per_channel and x.ndim >= 1 and x.shape[0] > 0:
        amax = np.abs(x.reshape(x.shape[0], -1)).max(axis=1, initial=0.0)
    else:
        amax = np.array([np.abs(x).max(initial=0.0)])
    scale = (amax / INT8_MAX).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.rint(x / _broadcast(safe, x.ndim))
    return np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8), scale


def _broadcast(scale: np.ndarray, ndim: int) -> np.ndarray:
    """A per-tensor scale as a scalar, a per-channel one shaped to broadcast on axis 0."""
    if scale.size == 1:
        return scale.reshape(())
    return scale.reshape((-1,) + (1,) * (ndim - 1))


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q * scale as float32, the scale per tensor (shape (1,)) or per axis-0 slice."""
    return (q.astype(np.float32) * _broadcast(scale.astype(np.float32), q.ndim)).astype(
        np.float32, copy=False)


# ---------------------------------------------------------------- top-k

def topk_sparsify(x: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices, values) of the ceil(fraction * size) largest-magnitude entries."""
    flat = np.asarray(x, np.float32).reshape(-1)
    k = topk_count(flat.size, fraction)
    if k == flat.size:
        index = np.arange(flat.size)
    else:
        index = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:]
        index.sort()  # deterministic order; also compresses better
    return index.astype(_index_dtype(flat.size)), flat[index].copy()


def topk_densify(index: np.ndarray, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The dense float32 tensor with value at the flat index positions, zero elsewhere."""
    size = int(np.prod(shape, dtype=np.int64))
    if index.size and (index.min() < 0 or index.max() >= size):
        raise TensorError(f"top-k index out of range for a tensor of {size} entries")
    out = np.zeros(size, np.float32)
    out[index] = value
    return out.reshape(shape)


# ---------------------------------------------------------------- whole updates

def encode(update: Arrays, encoding: str, fraction: float = 0.1) -> dict[str, np.ndarray]:
    """The arrays that carry update in this encoding (see the module docstring)."""
    out: dict[str, np.ndarray] = {}
    for name, x in update.items():
        if not _is_float(x.dtype) or encoding == "f32":
            out[name] = x
        elif encoding == "f16":
            out[name] = x.astype(np.float16)
        elif encoding == "int8":
            out[name], out[name + SEP + "scale"] = quantize_int8(x, per_channel=x.ndim >= 2)
        elif encoding == "topk":
            out[name + SEP + "index"], out[name + SEP + "value"] = topk_sparsify(x, fraction)
        else:
            raise TensorError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    return out


def decode(wire: Arrays, specs: Iterable[Spec], encoding: str) -> dict[str, np.ndarray]:
    """The task's tensors back from what arrived (checked with wire_specs first):
    floating-point tensors as float32, others as sent."""
    out: dict[str, np.ndarray] = {}
    for s in specs:
        if not _is_float(s.dtype) or encoding == "f32":
            out[s.name] = wire[s.name]
        elif encoding == "f16":
            out[s.name] = wire[s.name].astype(np.float32)
        elif encoding == "int8":
            scale = wire[s.name + SEP + "scale"]
            if not (np.isfinite(scale).all() and (scale >= 0).all()):
                raise TensorError(f"tensor {s.name!r}: int8 scales must be finite and >= 0")
            out[s.name] = dequantize_int8(wire[s.name], scale)
        elif encoding == "topk":
            out[s.name] = topk_densify(wire[s.name + SEP + "index"],
                                       wire[s.name + SEP + "value"], s.shape)
        else:
            raise TensorError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    return out


class ErrorFeedback:
    """Client-side error feedback (memory) for lossy encodings of deltas and gradients.

    Before encoding, the residual left by the previous round is added to the update;
    after, what the encoding dropped becomes the new residual (Seide et al. 2014; Stich,
    Cordonnier, Jaggi, "Sparsified SGD with Memory", NeurIPS 2018). Holds one residual
    the size of the model.
    """

    def __init__(self) -> None:
        self.residual: dict[str, np.ndarray] = {}

    def encode(self, update: Arrays, specs: Iterable[Spec], encoding: str,
               fraction: float = 0.1) -> dict[str, np.ndarray]:
        """Encodes update plus the carried residual, and keeps what was dropped."""
        specs = list(specs)
        corrected = {}
        for name, x in update.items():
            r = self.residual.get(name)
            corrected[name] = x + r if r is not None and r.shape == x.shape else x
        wire = encode(corrected, encoding, fraction)
        sent = decode(wire, specs, encoding)
        self.residual = {n: corrected[n] - sent[n] for n in corrected
                         if _is_float(corrected[n].dtype)}
        return wire
