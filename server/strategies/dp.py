"""Differential privacy around a strategy: central DP (clip, sum, noise on the server)
and local DP (the devices clip and noise; the server only asks them to).

Central, user-level DP is DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018,
https://arxiv.org/abs/1710.06963) with fixed clipping or the adaptive clipping of Andrew,
Thakkar, McMahan, Ramaswamy (NeurIPS 2021, https://arxiv.org/abs/1905.03871), the
method Flower ships as DifferentialPrivacyServerSideAdaptiveClipping. The math is in
:mod:`fedge.privacy.mechanisms`; here it is wired into the strategy spec:

- :class:`ClippedFold` clips each pseudo-gradient (``w_global - w_k``, the intake's
  filter 8) to norm C as it is folded and folds it with weight 1: example counts are
  chosen by the devices, so weighting by them would let one device weigh as much as it
  likes and no noise would cover it;
- :class:`CentralDP` adds ``N(0, (z C)^2)`` to the round's sum (as ``z C / n`` on the
  mean of the n updates) after the fold and before the wrapped strategy's server step,
  so any optimizer of the FedAvg family (FedAvgM, FedProx, FedAdam, ...) runs on the
  noised mean;
- :class:`LocalDP` leaves the server's aggregation as it is and puts C and z in every
  TRAIN task; the device clips and noises its own update (fedge.client.update);
- :class:`DistributedDP` (with secure aggregation) leaves it as it is too: each device
  clips to C, weighs 1 and adds its share of the noise before masking, as the secure
  round's parameters say (fedge.server.secure_round), so the unmasked mean arrives
  clipped, unweighted and noised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedge.privacy.mechanisms import (
    add_gaussian_noise,
    clip_in_place,
    next_clip,
    noised_unclipped_share,
    split_noise_multiplier,
)
from fedge.server.strategies.fedavg import FedAvg, FedAvgFold
from fedge.server.strategies.spec import Arrays, Strategy

log = logging.getLogger(__name__)

CLIP_KEY = "dp.clip"  # the adaptive clip norm, checkpointed with the optimizer's state


class ClippedFold(FedAvgFold):
    """A FedAvg running sum of updates clipped to a norm and weighted equally
    (total_weight is then the update count).

    clip: the clip norm; unclipped: how many updates had norm at most clip (adaptive
    clipping counts them).
    """

    def __init__(self, clip: float) -> None:
        super().__init__()
        self.clip = clip
        self.unclipped = 0

    def add(self, update: Mapping[str, np.ndarray], weight: float) -> None:
        """Clips update to the clip norm (in place: the caller hands it over) and folds
        it with weight 1 (the example count is ignored: see the module doc)."""
        if clip_in_place(update, self.clip) <= self.clip:  # type: ignore[arg-type]
            self.unclipped += 1
        super().add(update, 1.0)


@dataclass
class NoiseRecord:
    """What the last aggregate released: the clip norm it used, the noise std added to
    the sum, and the updates it summed."""

    clip: float
    sum_std: float
    updates: int


class CentralDP(Strategy[ClippedFold]):
    """Central DP around a FedAvg-family strategy (see the module doc).

    inner: the strategy whose step runs on the noised mean;
    noise_multiplier: z, the noise std over the clip norm for the whole round (with
        adaptive clipping, split between the sum and the clipped count so that the two
        cost what one Gaussian release of z costs);
    clip: C (the first C with adaptive clipping);
    adaptive, target_quantile, clip_lr: adaptive clipping and its quantile and step;
    rng: the noise source; None draws from the OS's entropy. Noise from a known seed
    could be subtracted, so a seed is for tests only.
    """

    def __init__(self, inner: Strategy[Any], noise_multiplier: float, clip: float,
                 adaptive: bool = False, target_quantile: float = 0.5,
                 clip_lr: float = 0.2, rng: np.random.Generator | None = None) -> None:
        if not isinstance(inner, FedAvg):
            raise ValueError(f"central DP needs a strategy of the FedAvg family, not "
                             f"{inner.name!r}")
        if clip <= 0 or noise_multiplier < 0:
            raise ValueError("central DP needs clip > 0 and noise_multiplier >= 0")
        self.inner = inner
        self.name = f"dp+{inner.name}"  # type: ignore[misc]  # checkpoints name both
        self.server_lr = inner.server_lr
        self.noise_multiplier = noise_multiplier
        self.clip = clip
        self.adaptive = adaptive
        self.target_quantile = target_quantile
        self.clip_lr = clip_lr
        self.sum_z, self.count_z = (split_noise_multiplier(noise_multiplier) if adaptive
                                    else (noise_multiplier, 0.0))
        self._rng = rng if rng is not None else np.random.default_rng()
        self.last: NoiseRecord | None = None

    def new_accumulator(self) -> ClippedFold:
        """An equal-weight running sum clipping to this round's clip norm."""
        return ClippedFold(self.clip)

    def aggregate(self, accumulator: ClippedFold) -> dict[str, np.ndarray]:
        """The mean of the clipped updates plus ``N(0, (z C / n)^2)`` per entry (the
        sum's noise, divided by n); with adaptive clipping, also moves C."""
        mean = self.inner.aggregate(accumulator)
        n = accumulator.count
        clip = accumulator.clip
        add_gaussian_noise(mean, self.sum_z * clip / n, self._rng)
        self.last = NoiseRecord(clip, self.sum_z * clip, n)
        if self.adaptive:
            # The count of unclipped updates has sensitivity 1/2 once centred (b - 1/2).
            share = noised_unclipped_share(accumulator.unclipped, n, self.count_z / 2,
                                           self._rng)
            self.clip = next_clip(clip, share, self.target_quantile, self.clip_lr)
            log.info("adaptive clipping: %d of %d updates unclipped (noised share %.3f); "
                     "clip norm %.4g -> %.4g", accumulator.unclipped, n, share, clip,
                     self.clip)
        return mean

    def step(self, weights: Arrays, gradient: Arrays) -> dict[str, np.ndarray]:
        """The wrapped strategy's server step on the noised mean."""
        return self.inner.step(weights, gradient)

    def client_config(self) -> dict[str, float]:
        """What the wrapped strategy asks of devices."""
        return self.inner.client_config()

    def state(self) -> dict[str, np.ndarray]:
        """The wrapped strategy's state and the clip norm."""
        return {**self.inner.state(), CLIP_KEY: np.array([self.clip], np.float64)}

    def load_state(self, state: Arrays) -> None:
        """Restores the wrapped strategy's state and the clip norm."""
        inner = dict(state)
        clip = inner.pop(CLIP_KEY, None)
        if clip is not None:
            self.clip = float(clip[0])
        self.inner.load_state(inner)

    def describe(self) -> str:
        """One line for logs."""
        how = (f"adaptive clip from {self.clip:g} toward quantile {self.target_quantile:g}"
               if self.adaptive else f"clip {self.clip:g}")
        return (f"{self.inner.describe()} with central DP (noise multiplier "
                f"{self.noise_multiplier:g}, {how})")


class LocalDP(Strategy[Any]):
    """Local DP: the wrapped strategy aggregates as it would; every TRAIN task asks the
    device to clip its update to clip and add noise of std noise_multiplier * clip."""

    def __init__(self, inner: Strategy[Any], noise_multiplier: float, clip: float) -> None:
        if clip <= 0 or noise_multiplier < 0:
            raise ValueError("local DP needs clip > 0 and noise_multiplier >= 0")
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]  # the inner state, unchanged
        self.buffers = inner.buffers  # type: ignore[misc]
        self.server_lr = inner.server_lr
        self.noise_multiplier = noise_multiplier
        self.clip = clip

    def new_accumulator(self) -> Any:
        """The wrapped strategy's accumulator."""
        return self.inner.new_accumulator()

    def aggregate(self, accumulator: Any) -> dict[str, np.ndarray]:
        """The wrapped strategy's aggregate (the updates arrive noised)."""
        return self.inner.aggregate(accumulator)

    def step(self, weights: Arrays, gradient: Arrays) -> dict[str, np.ndarray]:
        """The wrapped strategy's step."""
        return self.inner.step(weights, gradient)

    def client_config(self) -> dict[str, float]:
        """The wrapped strategy's config, plus the clip norm and noise multiplier."""
        return {**self.inner.client_config(), "dp_clip": self.clip,
                "dp_noise_multiplier": self.noise_multiplier}

    def state(self) -> dict[str, np.ndarray]:
        """The wrapped strategy's state."""
        return self.inner.state()

    def load_state(self, state: Arrays) -> None:
        """Restores the wrapped strategy's state."""
        self.inner.load_state(state)

    def describe(self) -> str:
        """One line for logs."""
        return (f"{self.inner.describe()} with local DP on the devices (clip "
                f"{self.clip:g}, noise multiplier {self.noise_multiplier:g})")


class DistributedDP(LocalDP):
    """Distributed DP under secure aggregation: the wrapped strategy steps on the
    unmasked mean; the devices learn C and their noise share from the secure round's
    parameters, not from the strategy (which would have them add the whole noise)."""

    def client_config(self) -> dict[str, float]:
        """The wrapped strategy's config (the noise share travels in SecureParams)."""
        return self.inner.client_config()

    def describe(self) -> str:
        """One line for logs."""
        return (f"{self.inner.describe()} with distributed DP under secure aggregation "
                f"(clip {self.clip:g}, noise multiplier at least {self.noise_multiplier:g})")


def with_privacy(strategy: Strategy[Any], config: Any) -> Strategy[Any]:
    """strategy wrapped for the privacy settings of config (PrivacySettings), or as it
    is with dp off."""
    if config.dp == "central":
        return CentralDP(strategy, config.dp_noise_multiplier, config.dp_clip,
                         config.dp_adaptive_clip, config.dp_target_quantile,
                         config.dp_clip_lr)
    if config.dp == "local":
        return LocalDP(strategy, config.dp_noise_multiplier, config.dp_clip)
    if config.dp == "distributed":
        return DistributedDP(strategy, config.dp_noise_multiplier, config.dp_clip)
    return strategy
