"""The privacy accountant: Google's dp-accounting (RDP), one event per committed round.

fedge samples a fixed number m of the N trainable devices connected when a round opens,
uniformly without replacement (fedge.server.sampler), so a sampled round is accounted as
exactly that: ``SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z))``, the bound
of Wang, Balle, Kasiviswanathan, "Subsampled Renyi Differential Privacy and Analytical
Moments Accountant" (AISTATS 2019, Theorem 27), with z the noise actually present in the
round's sum over the clip norm. dp-accounting composes that event only under its
REPLACE_ONE relation, where N is public; the neighbouring runs fedge's guarantee compares
differ in one device's contribution replaced by a zero update (the device takes part but
changes nothing), whose sensitivity is C, so z is the multiplier over C. (Wang et al.'s
proof only compares samples that differ in that one device, so their bound holds for
this relation with the base Gaussian's RDP at z; against any data for any data,
sensitivity 2C, the multiplier would be z / 2.) Until this change the rounds were
accounted as Poisson-sampled at q = m / N, a common shortcut that does not match
fixed-size sampling: docs/privacy.md gives both (the Poisson figure was 1.16 to 2.39
times smaller over the grid there).

Central and distributed DP: amplification by sampling holds against anyone who does not
see which devices were sampled (not the server itself). Local DP: each round a device
takes part in releases its update through ``GaussianDpEvent(z)`` with no amplification
(the server that receives it knows it was sampled), and the bound is for a device that
takes part in every round.

dp-accounting is an optional dependency (the ``privacy`` extra): :func:`require` turns its
absence into one line a person can act on.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from fedge.errors import ConfigError

# The largest fleet whose sampling rate m / N is recovered exactly from its float.
MAX_FLEET = 10**7
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
    """The dp-accounting event of one round: a Gaussian release, sampled without
    replacement when q < 1 (Wang et al.'s bound depends on m / N alone, so the
    smallest m and N of that ratio stand for the round's)."""
    dp = require()
    gaussian = dp.GaussianDpEvent(event.noise_multiplier)
    if event.sampling_rate >= 1.0:
        return gaussian
    ratio = Fraction(event.sampling_rate).limit_denominator(MAX_FLEET)
    return dp.SampledWithoutReplacementDpEvent(ratio.denominator, ratio.numerator, gaussian)


def new_rdp_accountant() -> Any:
    """An empty RDP accountant under the relation fedge's events need (module doc)."""
    dp = require()
    return dp.rdp.RdpAccountant(
        neighboring_relation=dp.privacy_accountant.NeighboringRelation.REPLACE_ONE)


@functools.lru_cache(maxsize=64)
def _curve(event: RoundEvent) -> Any:
    """The RDP curve of one round's event (None if this dp-accounting keeps it
    elsewhere). A sampled Gaussian's curve takes about a second to compute and a fleet
    of steady size repeats the same event every round: it is computed once."""
    accountant = new_rdp_accountant()
    accountant.compose(dp_event(event))
    curve = getattr(accountant, "_rdp", None)
    return None if curve is None else curve.copy()


class Accountant:
    """Composes rounds and answers epsilon at delta (RDP accountant)."""

    def __init__(self) -> None:
        self._accountant = new_rdp_accountant()
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
