"""How much one update may weigh and how far it may reach, decided from the fleet.

Two bounds that adapt to the round, so that one device cannot take over the aggregate
within the fixed limits (``--max-examples``, ``--max-update-norm``), which have to be
loose enough for every task and fleet:

* **Weight.** The example count an update is weighted by is capped at
  ``examples_factor`` times the smaller of the device's own count declared at Join and
  the median count the round's sampled devices declared at Join (known when the round
  opens, before any update). A device that declares 2^31 examples weighs at most
  ``examples_factor`` median devices; an honest device whose data grew since it joined
  weighs what it had then, times the factor.
* **Distance.** An update's pseudo-gradient is clipped to ``norm_factor`` times the
  *reference distance*: the median distance of the updates of the round's last attempt
  (committed or not; those refused by another filter excepted). The fold is streaming,
  each update added as it arrives and then dropped, so this round's median is not known
  when its first update must be folded; last round's is, and it costs one float per
  update (the norms, never the updates). A minority cannot move a median, and after a
  failed attempt the reference follows the fleet's real scale. The first round of a run
  (or of a restart) has no reference: it clips at ``warmup_norm_ratio`` times the norm of
  the global model (none when that is zero).

The distance bound always clips, never refuses: it is an estimate from other devices'
updates, so going past it is no proof of malice, and an honest outlier then still counts
(scaled down) instead of costing its round a quorum. ``--max-update-norm`` and
``--norm-action`` stay the fixed outer limit.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    """The fleet-relative bounds' settings (see ServerConfig); 0 turns one off."""

    examples_factor: float = 0.0
    norm_factor: float = 0.0
    warmup_norm_ratio: float = 0.0


def median(values: Iterable[float]) -> float:
    """The median of values, 0.0 when there are none."""
    listed = list(values)
    return float(statistics.median(listed)) if listed else 0.0


def example_weight(declared: int, joined: int, round_median: float, factor: float) -> float:
    """The weight of an update that declares `declared` examples, from a device that
    declared `joined` at Join, in a round whose sampled devices' median Join count is
    round_median (factor 0: the declared count as it is)."""
    if factor <= 0:
        return float(declared)
    reference = min(max(joined, 1), round_median) if round_median > 0 else max(joined, 1)
    return float(min(declared, factor * reference))


def distance_bound(reference: float, global_norm: float, bounds: Bounds) -> float:
    """The distance an update is clipped to this round (0.0: no bound): norm_factor
    times the reference distance, or in warm-up (no reference yet) warmup_norm_ratio
    times the global model's norm."""
    if bounds.norm_factor <= 0:
        return 0.0
    if reference > 0:
        return bounds.norm_factor * reference
    return bounds.warmup_norm_ratio * global_norm
