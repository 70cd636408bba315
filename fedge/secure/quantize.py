"""Fixed-point quantization of clipped float updates into Z_{2^32} and back.

A device clips its pseudo-gradient to L2 norm ``clip`` (so every entry is within
[-clip, clip]), multiplies it by its weight (its example count, capped at the round's
``weight_cap``), and rounds ``value * scale`` to an integer taken mod 2^32. The round's
scale is 2^30 / (clip * weight_cap * sampled): the sum of all sampled devices' weighted
entries stays under 2^30 in magnitude, so the sum mod 2^32 read as a signed 32-bit
integer is the true integer sum, with room to spare for rounding. The rounding error of
one entry of the mean is at most ``survivors / (2 * scale * total_weight)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

MODULUS_BITS = 32
HEADROOM = float(1 << 30)  # |true sum| stays below this, half of int32's range
NOISE_SIGMAS = 12.0  # the summed DP noise's range, in its standard deviations
_INT32_MIN, _INT32_MAX = -float(1 << 31), float((1 << 31) - 1)


def noise_bound(noise_std: float, devices: int) -> float:
    """The bound on one entry of the sum of devices' noise shares (module docstring)."""
    return NOISE_SIGMAS * noise_std * math.sqrt(max(0, devices))


def round_scale(clip: float, weight_cap: int, sampled: int, noise_std: float = 0.0
                ) -> float:
    """The fixed-point scale of a round (see the module docstring)."""
    if clip <= 0 or weight_cap < 1 or sampled < 1 or noise_std < 0:
        raise ValueError("clip, weight_cap and sampled must be positive")
    return HEADROOM / (clip * weight_cap * sampled + noise_bound(noise_std, sampled))


def clip_norm(vector: np.ndarray, clip: float) -> np.ndarray:
    """vector scaled down to L2 norm clip when it is longer (never up); non-finite
    entries are refused, as the plain intake refuses them."""
    if not np.all(np.isfinite(vector)):
        raise ValueError("the update has non-finite values")
    flat = vector.ravel()
    # Not np.linalg.norm: its BLAS dot wakes OpenBLAS's threads, which spin after each
    # call; on a device that cost 3x the norm in CPU it did not need (einsum: no BLAS).
    norm = math.sqrt(float(np.einsum("i,i->", flat, flat, dtype=np.float64)))
    if norm > clip:
        return vector * (clip / norm)
    return vector


def encode(vector: np.ndarray, weight: float, scale: float) -> np.ndarray:
    """round(weight * vector * scale) mod 2^32 as uint32 (two's complement for
    negatives)."""
    fixed = np.rint(vector.astype(np.float64) * (weight * scale)).astype(np.int64)
    return (fixed & 0xFFFFFFFF).astype(np.uint32)


Blocks = Callable[[], Iterator[np.ndarray]]  # a vector's float64 blocks, in order


def encode_blocks(blocks: Blocks, size: int, clip: float, weight: float, scale: float,
                  noise_std: float = 0.0, rng: np.random.Generator | None = None
                  ) -> np.ndarray:
    """encode(clip_norm(v, clip) + noise, weight, scale) of the vector v whose blocks
    blocks() yields (each call the same blocks, which encode_blocks may overwrite), with
    no model-sized float vector: one pass for the norm (and the finiteness check), one
    to scale, round and cast each block into the uint32 result while it is in the
    cache. noise_std > 0: N(0, noise_std^2) added to each clipped entry, drawn from rng
    (distributed DP). The result may differ from the composition's by one unit in rare
    entries: the norm is summed per block, and the clipping folded into the scaling.

    Few, large blocks: under a simulation's interpreter lock each numpy call is a point
    at which the device's thread may wait a switch interval to continue, so a block of
    64 Ki entries made this 8x slower there than one of 1 Mi (fedge.client.secure.BLOCK).
    """
    total = 0.0
    count = 0
    for block in blocks():  # a NaN or an infinity makes the sum of squares one
        total += float(np.einsum("i,i->", block, block, dtype=np.float64))  # no BLAS
        count += block.size
    if not math.isfinite(total):
        finite = all(np.all(np.isfinite(block)) for block in blocks())
        raise ValueError("the update's norm overflows float64" if finite
                         else "the update has non-finite values")
    if count != size:
        raise ValueError(f"an update of {count} entries for {size} parameters")
    norm = math.sqrt(total)
    shrink = clip / norm if norm > clip else 1.0
    if noise_std > 0 and rng is None:
        raise ValueError("noise needs a generator")
    # Without noise, shrinking and scaling are one multiplication (the rounding of the
    # product may then differ from the composition's by one unit, in rare entries).
    factor = weight * scale * (1.0 if noise_std > 0 else shrink)
    out = np.empty(size, np.uint32)
    signed = out.view(np.int32)  # int32's two's complement is the value mod 2^32
    start = 0
    for block in blocks():
        if noise_std > 0 and rng is not None:
            if shrink < 1.0:
                np.multiply(block, shrink, out=block)
            block += rng.normal(0.0, noise_std, block.size)
        np.multiply(block, factor, out=block)
        np.rint(block, out=block)
        # Within int32 unless the noise is dozens of deviations out (|value| <= 2^30 by
        # the round's scale): cast straight into the result, as encode()'s wrap of the
        # int64 would give, without a model-sized int64 vector. Beyond, a value
        # saturates; the sum then fails its range check, as a wrapped one would.
        np.clip(block, _INT32_MIN, _INT32_MAX, out=block)
        np.copyto(signed[start:start + block.size], block, casting="unsafe")
        start += block.size
    return out


def decode(total: np.ndarray, scale: float) -> np.ndarray:
    """A sum of encoded vectors (mod 2^32) as float64: read as signed, divided by
    scale (the division by the total weight is the caller's)."""
    return total.astype(np.uint32).view(np.int32).astype(np.float64) / scale


def in_range(total: np.ndarray, clip: float, weight: float, scale: float,
             survivors: int, noise_std: float = 0.0) -> bool:
    """Whether an unmasked sum can be the sum of honest clipped updates: no entry
    beyond clip * total weight * scale (plus the noise's bound, with DP) plus the
    rounding of each survivor. A sum that wrapped, or masks that did not cancel, fail
    this with overwhelming probability."""
    limit = math.ceil((clip * weight + noise_bound(noise_std, survivors)) * scale) + survivors
    return bool(np.all(np.abs(total.astype(np.uint32).view(np.int32).astype(np.int64))
                       <= limit))
