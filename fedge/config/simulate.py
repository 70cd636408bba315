"""The settings of ``fedge simulate``, each declared once (see fedge.config.settings):
the run, the strategy (shared with the server), the scenario knobs and the backend."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedge.config.asynchronous import AsyncSettings, check_async, updates_per_version
from fedge.config.lifecycle import LifecycleSettings
from fedge.config.personal import Personalization
from fedge.config.privacy import PrivacySettings, check_privacy
from fedge.config.settings import check_declared, check_range, setting
from fedge.config.strategy import LocalTraining, StrategySettings, check_strategy
from fedge.errors import ConfigError

PARTITIONS = ("iid", "dirichlet", "quantity", "shards")
BACKENDS = ("auto", "threads", "processes", "ray")
DELAYS = ("exponential", "uniform", "fixed")
ATTACKS = ("signflip", "scale", "noise")
SCENARIO = "scenario"  # the docs group of the scenario knobs
BACKEND = "backend"  # the docs group of the backends


@dataclass(frozen=True)
class SimulateConfig(LocalTraining, StrategySettings, PrivacySettings, LifecycleSettings,
                     Personalization, AsyncSettings):
    """Settings of ``fedge simulate``: one real server and N real client daemons on
    loopback gRPC, each client training on its own partition written to disk."""

    task: str = setting("digits-mlp", "built-in task name or package.module:attr")
    clients: int = setting(5, "number of clients", low=1)
    rounds: int = setting(10, "rounds", low=1)
    partition: str = setting(
        "iid", "iid, dirichlet (label skew, Dirichlet(alpha) per class), quantity (IID "
        "labels, client sizes in Dirichlet(alpha) proportions) or shards (label skew: two "
        "shards of label-sorted data per client)", choices=PARTITIONS)
    alpha: float = setting(0.5, "Dirichlet concentration of dirichlet and quantity "
                           "(smaller is more skewed)", low=1e-6)
    seed: int = setting(0, "seed of the partition, the initial model and sampling")
    out: str = setting("runs/simulate", "output directory")
    fraction: float = setting(1.0, "share of clients sampled per round", low=0, high=1,
                              low_open=True)
    round_timeout_s: float = setting(120.0, "a round's deadline, in seconds",
                                     flag="--round-timeout", low=0.1)
    scatter: bool = setting(False, "write each client's share as a scatter of formats "
                            "with corrupt files (see fedge data partition)")
    edge: bool = setting(True, "build, ship and install the edge artifact after the last "
                         "round", flag="--no-edge")
    scenario: str = setting("", "a built-in scenario (dropout, stragglers, slow-devices, "
                            "churn, hostile, quantity-skew, label-skew, bandwidth) or a "
                            "TOML file, read "
                            "first; --config and flags override it")
    relays: int = setting(0, "spread the clients over this many real relays (`fedge "
                          "relay`) between them and the server; 0: none", low=0)
    backend: str = setting("auto", "where clients run: threads, processes, ray, or auto "
                           "(threads up to 256 clients, processes above)",
                           choices=BACKENDS, group=BACKEND)
    workers: int = setting(0, "processes/ray: how many hosts share the clients",
                           shown="one per core", low=0, group=BACKEND)
    ray_address: str = setting("", "the Ray cluster to join (backend ray)",
                               shown="a local Ray", group=BACKEND)
    dropout: float = setting(0.0, "per client and round, the probability that a sampled "
                             "client goes silent until the deadline", low=0, high=1,
                             group=SCENARIO)
    stragglers: float = setting(0.0, "fraction of clients delayed before each update",
                                low=0, high=1, group=SCENARIO)
    straggler_delay_s: float = setting(1.0, "mean straggler delay, seconds",
                                       flag="--straggler-delay", low=0, group=SCENARIO)
    straggler_distribution: str = setting(
        "exponential", "exponential, uniform (0 to twice the mean) or fixed",
        choices=DELAYS, group=SCENARIO)
    straggler_slowdown: float = setting(
        1.0, "stragglers also train this many times slower than the others (each of their "
        "updates is held k - 1 times its own training time); 1: not slower", low=1,
        group=SCENARIO)
    late_joiners: float = setting(0.0, "fraction of clients that connect only once round "
                                  "join_round - 1 is committed", low=0, high=1,
                                  group=SCENARIO)
    join_round: int = setting(3, "the round late joiners arrive for (the server opens it "
                              "as the round before commits, so they may first be sampled "
                              "in the next)", group=SCENARIO)
    leavers: float = setting(0.0, "fraction of clients that disconnect after leave_round",
                             low=0, high=1, group=SCENARIO)
    leave_round: int = setting(2, "the last round leavers take part in", group=SCENARIO)
    flower_client: str = setting("", "run every client as this Flower NumPyClient, Client "
                                 "or client_fn (module:attr; needs the flower extra); a "
                                 "client_fn gets partition-id and num-partitions as "
                                 "run_simulation gives them")
    hostile_clients: float = setting(0.0, "fraction of clients whose updates are attacks",
                                     low=0, high=1, group=SCENARIO)
    attack: str = setting("signflip", "signflip (-factor x the honest step), scale (factor "
                          "x) or noise (Gaussian, factor x the step's RMS)", choices=ATTACKS,
                          group=SCENARIO)
    attack_factor: float = setting(4.0, "the attack's size", low=0, group=SCENARIO)
    bandwidth_kbps: float = setting(0.0, "each client's link cap, kilobits/s each way",
                                    shown="0 = none", low=0, group=SCENARIO)
    quorum_fraction: float = setting(0.0, "share of sampled clients a round commits with "
                                     "at its deadline", shown="all, or 0.5 with dropout, "
                                     "leavers or hostile clients", low=0, high=1,
                                     group=SCENARIO)
    min_clients: int = setting(0, "clients needed to open a round",
                               shown="ceil(fraction x clients present at the start)", low=0,
                               group=SCENARIO)

    def __post_init__(self) -> None:
        check_declared(self)
        check_privacy(self)
        check_strategy(self, updates_per_version(
            self, max(1, math.ceil(self.fraction * self.clients))))
        check_async(self)
        if self.late_joiners + self.leavers + self.hostile_clients > 1.0:
            raise ConfigError("late_joiners + leavers + hostile_clients must be at most 1 "
                              "(they are disjoint groups of clients)")
        if self.late_joiners:
            check_range("join_round", self.join_round, 2, self.rounds)
        if self.leavers:
            check_range("leave_round", self.leave_round, 1, self.rounds)
        if self.relays > self.clients:
            raise ConfigError(f"relays ({self.relays}) must be at most clients "
                              f"({self.clients}): each relay serves at least one")
        if self.relays and self.late_joiners:
            raise ConfigError("late_joiners do not go with relays: a late joiner watches "
                              "the server's round, which its relay does not show")
        if self.personalize_epochs and self.flower_client:
            raise ConfigError("personalize_epochs fine-tunes the task's torch model: not "
                              "with flower_client")
        if self.ray_address and self.backend != "ray":
            raise ConfigError("ray_address applies to backend 'ray'")
