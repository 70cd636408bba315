"""The Gaussian mechanism on model updates, and adaptive clipping, as pure functions.

Central user-level DP (DP-FedAvg): McMahan, Ramage, Talwar, Zhang. "Learning
Differentially Private Recurrent Language Models". ICLR 2018.
https://arxiv.org/abs/1710.06963 -- each device's update is clipped to L2 norm C, the
clipped updates are summed with equal weight, and Gaussian noise of std z*C is added to
the sum; one device then moves the noised sum by at most C.

Adaptive clipping: Andrew, Thakkar, McMahan, Ramaswamy. "Differentially Private Learning
with Adaptive Clipping". NeurIPS 2021. https://arxiv.org/abs/1905.03871 -- the clip norm
follows a quantile of the update norms: each round the share b of updates whose norm was
at most C is released with Gaussian noise, and ``C <- C * exp(-lr * (b - quantile))``.
The noised count costs privacy too: the updates' noise multiplier is raised so that the
two Gaussian releases together cost what one with multiplier z costs
(:func:`split_noise_multiplier`).
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

import numpy as np

from fedge.tensors import l2_norm

# The share of the privacy cost (in inverse-square noise multipliers, which add up under
# composition of Gaussian mechanisms) that adaptive clipping spends on the clipped count.
COUNT_SHARE = 0.1


def clip_in_place(arrays: MutableMapping[str, np.ndarray], clip: float) -> float:
    """Scales arrays down (in place) to L2 norm at most clip; returns the norm before.

    Integer tensors (counters) are left alone: they are not part of what is released
    with noise, and the strategy's fold rounds them.
    """
    if clip <= 0:
        raise ValueError(f"the clip norm must be positive, got {clip}")
    length = l2_norm(arrays)
    if length > clip:
        scale = clip / length
        for array in arrays.values():
            if array.dtype.kind == "f":
                array *= np.asarray(scale, array.dtype)
    return length


def add_gaussian_noise(arrays: MutableMapping[str, np.ndarray], std: float,
                       rng: np.random.Generator) -> None:
    """Adds independent N(0, std^2) noise to every entry of every floating tensor, in
    place (drawn in float64, added in the tensor's dtype)."""
    if std < 0:
        raise ValueError(f"the noise std must be >= 0, got {std}")
    if std == 0:
        return
    for array in arrays.values():
        if array.dtype.kind == "f":
            array += rng.normal(0.0, std, array.shape).astype(array.dtype, copy=False)


def split_noise_multiplier(z: float, count_share: float = COUNT_SHARE
                           ) -> tuple[float, float]:
    """(z_updates, z_count) for adaptive clipping whose two releases together cost one
    Gaussian mechanism of noise multiplier z.

    Gaussian mechanisms compose as ``z^-2 = z_updates^-2 + z_count^-2`` (each z the noise
    std over the sensitivity); the count takes count_share of it. The count's
    sensitivity is 1/2 (Andrew et al. release ``sum(b_i - 1/2)``), so its noise std is
    ``z_count / 2``.
    """
    if z <= 0:
        raise ValueError("adaptive clipping needs a positive noise multiplier")
    if not 0 < count_share < 1:
        raise ValueError(f"count_share must be in (0, 1), got {count_share}")
    return z / math.sqrt(1 - count_share), z / math.sqrt(count_share)


def noised_unclipped_share(unclipped: int, updates: int, count_std: float,
                           rng: np.random.Generator) -> float:
    """The released share of updates whose norm was at most the clip norm:
    ``(unclipped + N(0, count_std^2)) / updates``."""
    if updates <= 0:
        raise ValueError("no updates to count")
    return (unclipped + float(rng.normal(0.0, count_std))) / updates


def next_clip(clip: float, unclipped_share: float, quantile: float, lr: float) -> float:
    """Andrew et al.'s geometric update of the clip norm toward the target quantile:
    ``C * exp(-lr * (share - quantile))`` (too many unclipped: C shrinks)."""
    return clip * math.exp(-lr * (unclipped_share - quantile))


def device_noise_std(target_std: float, expected_survivors: int) -> float:
    """The noise std each device adds so that the sum of expected_survivors devices'
    noise has std target_std (distributed DP under secure aggregation).

    Independent Gaussians add in variance: n shares of std ``s / sqrt(n)`` sum to std s.
    Pass the number of devices expected to reach the unmasking step (at least the
    secure-aggregation threshold t): if fewer survive, the sum carries less noise than
    the target, and the accountant must be told the noise actually present,
    ``device_noise_std * sqrt(survivors)`` (see :func:`present_noise_multiplier`).
    """
    if expected_survivors < 1:
        raise ValueError("expected_survivors must be at least 1")
    if target_std < 0:
        raise ValueError("target_std must be >= 0")
    return target_std / math.sqrt(expected_survivors)


def present_noise_multiplier(device_std: float, survivors: int, clip: float) -> float:
    """The noise multiplier actually present in a sum of survivors devices' noise shares
    of std device_std each, for updates clipped to clip (what the accountant takes)."""
    if clip <= 0:
        raise ValueError("clip must be positive")
    return device_std * math.sqrt(max(0, survivors)) / clip
