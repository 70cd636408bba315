"""The run's privacy budget: one accountant event per committed round, epsilon after
each, and whether one more round would exceed ``--target-epsilon``.

The per-round facts (sampling rate, noise multiplier, clip norm, delta, epsilon) are
written to the state directory's metrics (source "privacy") before the round's row, so a
restarted server rebuilds the accountant from every committed round: a round whose row
was never written is retried and its facts overwritten. The math is
:mod:`fedge.privacy.accounting`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from fedge.privacy.accounting import Accountant, RoundEvent
from fedge.server.store import StateStore

log = logging.getLogger(__name__)

SOURCE = "privacy"  # the metrics rows' source and device columns
DEFAULT_DELTA = 1e-5


def default_delta(fleet: int) -> float:
    """The delta of a run that sets none: 1e-5, or 1/fleet size for a fleet over
    100,000 devices (delta must stay well below one over the number of users)."""
    return min(DEFAULT_DELTA, 1.0 / max(1, fleet))


@dataclass(frozen=True)
class BudgetEntry:
    """The accountant's view of one committed round."""

    round: int
    sampling_rate: float
    noise_multiplier: float
    clip: float
    delta: float
    epsilon: float


class PrivacyBudget:
    """Accounts a run's rounds (see the module doc).

    mode: "central" or "distributed" (a Gaussian release amplified by the round's
        fixed-size sampling) or "local" (a Gaussian release per round, no
        amplification: the server knows who sent);
    noise_multiplier: z as configured; a distributed round is accounted with the
        multiplier its sum really carried (at least z when it commits);
    delta: None for default_delta of the first round's fleet, then fixed for the run;
    target_epsilon: 0 for no budget.
    """

    def __init__(self, mode: str, noise_multiplier: float, delta: float | None,
                 target_epsilon: float, store: StateStore) -> None:
        self.mode = mode
        self.noise_multiplier = noise_multiplier
        self.target_epsilon = target_epsilon
        self._store = store
        self._accountant = Accountant()
        self.entries: list[BudgetEntry] = []
        self.delta = delta
        for record in store.rounds():
            values = {name: store.metric_values(record.round, SOURCE, name).get(SOURCE)
                      for name in ("sampling_rate", "noise_multiplier", "clip", "delta",
                                   "epsilon")}
            if record.round == 0 or values["sampling_rate"] is None:
                continue
            entry = BudgetEntry(record.round, **{k: float(v or 0.0)
                                                 for k, v in values.items()})
            self._accountant.add(RoundEvent(entry.sampling_rate, entry.noise_multiplier))
            self.entries.append(entry)
            if self.delta is None:
                self.delta = entry.delta
        if self.entries:
            log.info("privacy: resumed the accountant at epsilon %.4g after %d round(s)",
                     self.epsilon, len(self.entries))

    @property
    def epsilon(self) -> float:
        """Epsilon at the run's delta after every round accounted so far."""
        return self.entries[-1].epsilon if self.entries else 0.0

    def event(self, sampled: int, population: int, noise_multiplier: float = 0.0
              ) -> RoundEvent:
        """The accountant's event for a round sampling sampled of population devices
        whose release carried noise_multiplier (0: the configured z)."""
        z = noise_multiplier or self.noise_multiplier
        if self.mode == "local":
            return RoundEvent(1.0, z)
        return RoundEvent(min(1.0, sampled / max(1, population)), z)

    def _delta_for(self, population: int) -> float:
        return self.delta if self.delta is not None else default_delta(population)

    def exceeds(self, sampled: int, population: int) -> bool:
        """Whether a round sampling sampled of population would take epsilon past the
        target (False without a target)."""
        if self.target_epsilon <= 0:
            return False
        after = self._accountant.epsilon_after(self.event(sampled, population),
                                               self._delta_for(population))
        return after > self.target_epsilon

    def record(self, round_: int, sampled: int, population: int,
               clip: float, noise_multiplier: float = 0.0) -> BudgetEntry:
        """Accounts a round about to be committed and writes its facts (before its row);
        noise_multiplier: what the round's release really carried (0: the configured
        z; distributed DP passes the survivors' noise)."""
        self.delta = self._delta_for(population)
        event = self.event(sampled, population, noise_multiplier)
        self._accountant.add(event)
        entry = BudgetEntry(round_, event.sampling_rate, event.noise_multiplier, clip,
                            self.delta, self._accountant.epsilon(self.delta))
        self._store.add_metrics(round_, SOURCE, SOURCE,
                                {k: v for k, v in asdict(entry).items() if k != "round"})
        self.entries.append(entry)
        log.info("round %d: epsilon %.4g at delta %.3g (sampling rate %.3g, noise "
                 "multiplier %g)", round_, entry.epsilon, entry.delta, entry.sampling_rate,
                 entry.noise_multiplier, extra={"event": "round.privacy", "round": round_,
                                                "epsilon": entry.epsilon})
        return entry

    def epsilon_of(self, round_: int) -> float | None:
        """Epsilon after round_ (None for a round not accounted)."""
        for entry in reversed(self.entries):
            if entry.round == round_:
                return entry.epsilon
        return None

    def summary(self) -> dict[str, Any]:
        """The run's privacy as JSON-ready values (status, report)."""
        return {"mode": self.mode, "noise_multiplier": self.noise_multiplier,
                "delta": self.delta or 0.0, "epsilon": self.epsilon,
                "target_epsilon": self.target_epsilon,
                "clip": self.entries[-1].clip if self.entries else 0.0}
