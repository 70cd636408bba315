"""The privacy accountant: Google's dp-accounting (RDP), one event per committed round.

Central DP: each round is ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` with q the
sampling rate the round really used (devices sampled / trainable devices connected when
it was sampled); privacy amplification by sampling holds against anyone who does not see
which devices were sampled. Local DP: each round a device takes part in releases its
update through ``GaussianDpEvent(z)`` with no amplification (the server that receives it
knows it was sampled), and the bound is for a device that takes part in every round.

dp-accounting is an optional dependency (the ``privacy`` extra): :func:`require` turns its
absence into one line a person can act on.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from typing import Any

from fedge.errors import ConfigError

MISSING = ("differential privacy needs the dp-accounting package: pip install "
           "'fedge[privacy]'")


def require() -> Any:
    """The dp_accounting module, or a ConfigError (exit 2) saying how to install it."""
    try:
        import dp_accounting
    except ImportError:
        raise ConfigError(MISSING) from None
    # The RDP accountant logs a warning per order it cannot compute at large sampling
    # rates (it drops those orders, which is sound); they are not the user's concern.
    logging.getLogger("absl").setLevel(logging.ERROR)
    return dp_accounting


@dataclass(frozen=True)
class RoundEvent:
    """One round as the accountant sees it: its sampling rate and noise multiplier
    (q 1.0 for a release without amplification by sampling)."""

    sampling_rate: float
    noise_multiplier: float


def dp_event(event: RoundEvent) -> Any:
    """The dp-accounting event of one round."""
    dp = require()
    gaussian = dp.GaussianDpEvent(event.noise_multiplier)
    if event.sampling_rate >= 1.0:
        return gaussian
    return dp.PoissonSampledDpEvent(event.sampling_rate, gaussian)


@functools.lru_cache(maxsize=64)
def _curve(event: RoundEvent) -> Any:
    """The RDP curve of one round's event (None if this dp-accounting keeps it
    elsewhere). A sampled Gaussian's curve takes about a second to compute and a fleet
    of steady size repeats the same event every round: it is computed once."""
    accountant = require().rdp.RdpAccountant()
    accountant.compose(dp_event(event))
    curve = getattr(accountant, "_rdp", None)
    return None if curve is None else curve.copy()


class Accountant:
    """Composes rounds and answers epsilon at delta (RDP accountant)."""

    def __init__(self) -> None:
        dp = require()
        self._accountant = dp.rdp.RdpAccountant()
        self.events: list[RoundEvent] = []

    def add(self, event: RoundEvent) -> None:
        """Composes one round: adds its (cached) RDP curve, exactly what
        ``RdpAccountant.compose`` adds, or composes it when the curve is not at hand."""
        curve = _curve(event)
        if curve is not None and hasattr(self._accountant, "_rdp"):
            self._accountant._rdp = self._accountant._rdp + curve
        else:
            self._accountant.compose(dp_event(event))
        self.events.append(event)

    def epsilon(self, delta: float) -> float:
        """Epsilon at delta of every round composed so far (0 before any)."""
        if not self.events:
            return 0.0
        return float(self._accountant.get_epsilon(delta))

    def epsilon_after(self, event: RoundEvent, delta: float) -> float:
        """Epsilon at delta if event were composed next (nothing is changed)."""
        trial = copy.deepcopy(self)  # the RDP curve so far: O(orders), not O(rounds)
        trial.add(event)
        return trial.epsilon(delta)
