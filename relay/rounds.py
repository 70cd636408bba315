"""A relay's rounds: each opens when the upstream hands the relay a TRAIN task, and
closes into a partial aggregate instead of a commit.

The relay's gRPC side is a plain server's (fedge.server.app.FedgeServer: the same
service, tokens, TLS, status and metrics); only the driver differs. Where a server's
driver samples and commits on its own clock, here the upstream's task drives: the model
it names is installed as the version devices train from (one upstream download serves
every device below), the round opens with the upstream's round number and training
settings (so each device shuffles with the seed a flat run would give it), closes when
every sampled device has settled or shortly before the upstream's deadline, and its
accumulator's example-weighted mean pseudo-gradient goes back up with the examples it
weighs. Nothing is committed here: the upstream commits.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedge.refusals import StaleRequest
from fedge.server.commit import model_blob
from fedge.server.registry import Device
from fedge.server.round_state import Phase, RoundState, sample_size
from fedge.server.rounds import Rounds
from fedge.server.sampler import sample
from fedge.server.store import RoundRecord
from fedge.server.strategies.fedavg import FedAvg, FedAvgFold
from fedge.tensors import sha256_hex

log = logging.getLogger(__name__)


class PassThrough(FedAvg):
    """FedAvg whose per-task client config is whatever the upstream asked of the relay
    (FedProx's mu, local DP's clip and noise), handed on to the relay's devices."""

    name = "relay"

    def __init__(self) -> None:
        super().__init__(1.0)
        self.config: dict[str, float] = {}

    def client_config(self) -> dict[str, float]:
        """What the upstream's last TRAIN task asked of the devices."""
        return dict(self.config)


@dataclass(frozen=True)
class Upstream:
    """What the upstream asked for in one TRAIN task, as the relay's round runs it.

    closes: the time.time() at which the relay stops waiting for its devices (the
    upstream's deadline less the margin its own upload needs).
    """

    round: int
    model_version: int
    closes: float
    epochs: int
    lr: float
    batch_size: int
    momentum: float | None
    update_kind: str
    client_config: Mapping[str, float]


@dataclass
class Partial:
    """A closed relay round: the example-weighted mean pseudo-gradient of its devices'
    updates, the examples it weighs (their sum, as weighed), how many updates it folds
    and how many devices were sampled."""

    gradient: dict[str, np.ndarray]
    examples: int
    updates: int
    sampled: int


def trainable(devices: list[Device]) -> list[Device]:
    """The devices a round may sample (as the server's driver counts them)."""
    return [d for d in devices if (d.authenticated or d.polled) and not d.inference_only]


class RelayRounds(Rounds):
    """Rounds driven by the upstream's TRAIN tasks (see the module doc)."""

    _served = -1  # the upstream model version devices train from (-1: none yet)

    def run(self) -> None:
        """The driver thread: nothing to drive on its own; once the upstream run is over
        (finish()) it lingers while the devices collect their STOP."""
        with self.cond:
            while not self.stopping and self.phase is not Phase.DONE:
                self.cond.wait(0.5)
        self.linger()

    def model_blob(self, version: int) -> tuple[bytes, str]:
        """The blob of the model version devices train from: a relay keeps only the
        newest (StaleRequest for any other; the device polls again)."""
        with self.cond:
            if version == self.model_version:
                return self._blob_bytes, self._blob_sha
            latest = self.model_version
        raise StaleRequest(f"this relay serves model version {latest} only, not {version}")

    def live_examples(self) -> int:
        """The examples of the trainable devices connected now (the relay's Join count)."""
        return sum(d.num_examples for d in trainable(self.registry.live()))

    def wait_for_devices(self, wanted: int, timeout_s: float) -> int:
        """Waits up to timeout_s for wanted trainable devices; returns how many there are."""
        end = time.monotonic() + timeout_s
        with self.cond:
            while True:
                live = len(trainable(self.registry.live()))
                remaining = end - time.monotonic()
                if live >= wanted or remaining <= 0 or self.stopping:
                    return live
                self.cond.wait(min(remaining, 0.25))

    def serve_model(self, version: int, weights: dict[str, np.ndarray]) -> None:
        """Makes the upstream's model version the one devices fetch and train from (a
        retried round's version is already served, and keeps its state)."""
        if version == self._served:
            return
        blob = model_blob(weights, self.task_name, version)
        record = RoundRecord(version, 0.0, 0.0, 0, 0, 0, 0, 0.0, sha256=sha256_hex(blob))
        self.install(record, weights, blob)
        self._served = version

    def relay_round(self, up: Upstream, weights: dict[str, np.ndarray]) -> Partial | None:
        """Runs one round for the upstream's task over this relay's devices; returns its
        partial aggregate (None: no device's update arrived in time, or stop)."""
        self.serve_model(up.model_version, weights)
        settings = self.settings
        live = self.wait_for_devices(settings.min_clients, up.closes - time.time())
        if live < settings.min_clients or self.stopping:
            log.warning("round %d: %d device(s) below this relay, %d needed; no partial "
                        "aggregate", up.round, live, settings.min_clients)
            return None
        assert isinstance(self.strategy, PassThrough)
        self.strategy.config = dict(up.client_config)
        with self.cond:
            self.settings = dataclasses.replace(
                settings, epochs=up.epochs, lr=up.lr, batch_size=up.batch_size,
                momentum=settings.momentum if up.momentum is None else up.momentum,
                update_kind=up.update_kind, round_timeout_s=max(0.1, up.closes - time.time()))
            if self.current.number != up.round:  # the upstream's round numbers the tasks
                self.current = RoundState(up.round)
            devices = trainable(self.registry.live())
            chosen = sample(devices, sample_size(self.settings, len(devices)),
                            settings.seed, up.round)
        self.open_round(chosen)
        assignments = self.close_round(max(0.0, up.closes - time.time()))
        state = self.current
        with state.fold_lock:
            if not state.fold.count:
                log.warning("round %d: none of the %d device(s) sampled below this relay "
                            "sent an update in time", up.round, len(assignments))
                return None
            fold = state.fold
            assert isinstance(fold, FedAvgFold)  # open_round made it with PassThrough's
            gradient = fold.result()
            updates = state.fold.count
        log.info("round %d: partial aggregate of %d update(s), %d examples", up.round,
                 updates, state.examples,
                 extra={"event": "relay.partial", "round": up.round, "updates": updates})
        return Partial(gradient, state.examples, updates, len(assignments))

    def finish(self, reason: str = "") -> None:
        """Ends the relay's run (its upstream said STOP, or its link to it failed): its
        devices are told STOP, with the reason when it failed."""
        if reason:
            self.fail(reason)
        else:
            self.end_early("the upstream run is over")
