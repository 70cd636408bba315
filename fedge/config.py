"""Typed, validated configuration for the server, the client daemon and the simulator.

Each component's settings are a frozen dataclass. Values come, lowest precedence first,
from the dataclass defaults, a TOML file (top-level keys named as the fields), and
command-line options. Errors name the key and the value expected.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fedge.errors import ConfigError
from fedge.wire import ENCODING_NAMES, UPDATE_KIND_NAMES

C = TypeVar("C")


@dataclass(frozen=True)
class ServerConfig:
    """Settings of ``fedge server``.

    min_clients: devices that must report for a round to commit (and be connected for
        it to start).
    fraction: share of the connected devices sampled each round (at least min_clients).
    round_timeout_s: a round's deadline; at the deadline it commits if min_clients
        reported, else it is retried with a new sample.
    epochs, lr, batch_size: local training settings sent to devices; 0 means the task's
        default.
    linger_s: after the last round, how long at most to keep answering polls with STOP
        so devices exit cleanly; the server leaves as soon as every live device has
        been told, so only a device that went silent costs the whole wait (one still
        installing the final edge model on a slow, busy board needs several seconds).
    allow_anonymous: accept devices without a token (their device id is unverified).
    tls_client_ca: PEM CA that client certificates must chain to (mTLS); empty means
        client certificates are not asked for.
    quorum_fraction: share of a round's sampled devices whose updates commit it at the
        deadline; 0 means min_clients updates.
    max_round_attempts: how many times in a row a round may miss its quorum (retried
        with a new sample after retry_backoff_s) before the run stops with an error and
        `fedge server` exits 1; 0 retries forever. A round whose updates are all refused
        (a diverged model's NaNs, say) would otherwise be retried for ever.
    max_update_norm: bound on an update's L2 distance from the global model (0: none);
        norm_action "refuse" rejects a longer update, "clip" scales it back to the bound.
    max_examples: the largest example count a device may declare for one update.
    max_uploads: update streams received at once; more are refused with
        RESOURCE_EXHAUSTED and the device retries.
    rate_limit, rate_burst: requests per second (and burst) allowed per device; 0 is off.
    metrics_port: serve Prometheus metrics on http://HOST:PORT/metrics; 0 is off.
    status_interval_s: how often STATE_DIR/status.json is rewritten for `fedge status`.
    max_workers: RPC worker threads. A long poll holds one, so at most max_workers minus
        an eighth kept for joins, fetches and uploads are held at once; the other devices'
        polls are answered at once with a jittered retry_after. Raise it for large fleets.
    strategy, update, encoding, server_lr, server_momentum, mu, trim, byzantine_f,
        topk_fraction: the aggregation strategy, what clients send and how it travels
        (see check_strategy; None means the strategy's default).
    """

    task: str = "digits-mlp"
    host: str = "0.0.0.0"
    port: int = 50051
    rounds: int = 10
    min_clients: int = 2
    fraction: float = 1.0
    round_timeout_s: float = 300.0
    retry_backoff_s: float = 2.0
    max_round_attempts: int = 5
    epochs: int = 0
    lr: float = 0.0
    batch_size: int = 0
    seed: int = 0
    state_dir: str = "fedge-state"
    insecure: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    poll_seconds: float = 10.0
    device_timeout_s: float = 60.0
    max_update_bytes: int = 1 << 30
    linger_s: float = 30.0
    allow_anonymous: bool = False
    tls_client_ca: str = ""
    quorum_fraction: float = 0.0
    max_update_norm: float = 1e6
    norm_action: str = "refuse"
    max_examples: int = 1 << 31
    max_uploads: int = 32
    rate_limit: float = 50.0
    rate_burst: float = 100.0
    metrics_port: int = 0
    status_interval_s: float = 2.0
    # Strategy, update kind and encoding (see check_strategy and README "Strategies").
    strategy: str = "fedavg"
    update: str = "weights"
    encoding: str = "f32"
    server_lr: float | None = None
    server_momentum: float | None = None
    mu: float | None = None
    trim: float | None = None
    byzantine_f: int | None = None
    topk_fraction: float = 0.1
    # Edge artifacts: built after the last round, and every edge_every rounds
    # when that is above 0, from the task's student model; see server/deploy.py.
    edge: bool = True
    edge_every: int = 0
    max_workers: int = 256

    def __post_init__(self) -> None:
        check_strategy(self, self.min_clients)
        _check_range("max_workers", self.max_workers, 8, 16384)
        _check_range("rounds", self.rounds, 1)
        _check_range("min_clients", self.min_clients, 1)
        _check_range("port", self.port, 0, 65535)
        _check_range("round_timeout_s", self.round_timeout_s, 0.1)
        _check_range("poll_seconds", self.poll_seconds, 0.01)
        _check_range("epochs", self.epochs, 0)
        _check_range("batch_size", self.batch_size, 0)
        _check_range("lr", self.lr, 0.0)
        _check_range("max_update_bytes", self.max_update_bytes, 1)
        _check_range("edge_every", self.edge_every, 0)
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        _check_tls(self.insecure, bool(self.tls_cert), "server", "--tls-cert/--tls-key")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca and self.insecure:
            raise ConfigError("tls_client_ca (mTLS) needs TLS; drop --insecure and give "
                              "--tls-cert/--tls-key")
        if not 0.0 <= self.quorum_fraction <= 1.0:
            raise ConfigError(f"quorum_fraction must be in [0, 1], got {self.quorum_fraction}")
        _check_range("max_update_norm", self.max_update_norm, 0.0)
        _check_range("max_round_attempts", self.max_round_attempts, 0)
        if self.norm_action not in NORM_ACTIONS:
            raise ConfigError(f"norm_action must be one of {NORM_ACTIONS}, got "
                              f"{self.norm_action!r}")
        _check_range("max_examples", self.max_examples, 1)
        _check_range("max_uploads", self.max_uploads, 1)
        _check_range("rate_limit", self.rate_limit, 0.0)
        _check_range("rate_burst", self.rate_burst, 1.0)
        _check_range("metrics_port", self.metrics_port, 0, 65535)
        _check_range("status_interval_s", self.status_interval_s, 0.1)


NORM_ACTIONS = ("refuse", "clip")


@dataclass(frozen=True)
class ClientConfig:
    """Settings of ``fedge client``.

    data: directories, files or globs of local training data (CSV, .npy/.npz, JSON
        Lines, image folders; see client.data).
    label_column, x_key, y_key: how local files name labels and inputs ("" = the task's).
    debug_report_files: name skipped files in the metrics sent to the server (debug).
    device: "auto" (CUDA when available, else CPU), "cpu" or "cuda[:N]".
    backoff_initial_s, backoff_max_s: reconnect delays while the server is away.
    token: the device's token from ``fedge tokens create`` (better given through the
        FEDGE_TOKEN environment variable than in a file or on the command line).
    tls_cert, tls_key: the device's client certificate, for servers that require mTLS.
    metrics_port: serve the daemon's Prometheus metrics on 127.0.0.1:PORT; 0 is off.
    """

    server: str = "127.0.0.1:50051"
    task: str = "digits-mlp"
    data: tuple[str, ...] = ()
    device_id: str = field(default_factory=socket.gethostname)
    insecure: bool = False
    tls_ca: str = ""
    device: str = "auto"
    poll_seconds: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    metrics_port: int = 0
    # How local files name their fields (see client.data.ReadOptions).
    label_column: str = ""
    x_key: str = "x"
    y_key: str = "y"
    # Debugging aid: name skipped files in the metrics sent to the server.
    debug_report_files: bool = False
    # Edge artifacts: the server's public key (PEM) to trust; without one, DEPLOY tasks
    # are declined. model_dir is where verified artifacts are installed.
    trust_key: str = ""
    model_dir: str = "fedge-model"
    # Never train: only install shipped edge artifacts and report how they do (needs
    # no torch; what `pip install 'fedge[edge]'` supports). Needs trust_key.
    inference_only: bool = False

    def __post_init__(self) -> None:
        if not self.device_id:
            raise ConfigError("device_id must not be empty")
        if ":" not in self.server:
            raise ConfigError(f"server must be HOST:PORT, got {self.server!r}")
        _check_range("backoff_initial_s", self.backoff_initial_s, 0.001)
        _check_range("backoff_max_s", self.backoff_max_s, self.backoff_initial_s)
        _check_range("poll_seconds", self.poll_seconds, 0.01)
        _check_tls(self.insecure, bool(self.tls_ca), "client", "--tls-ca")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: give both or neither")
        if self.tls_cert and self.insecure:
            raise ConfigError("a client certificate (tls_cert) needs TLS; drop --insecure")
        _check_range("metrics_port", self.metrics_port, 0, 65535)
        if self.inference_only and not self.trust_key:
            raise ConfigError("inference_only needs trust_key (--trust-key): such a device "
                              "only installs shipped models, and refuses them all without "
                              "the server's public key")


@dataclass(frozen=True)
class SimulateConfig:
    """Settings of ``fedge simulate``: one real server and N real client daemons on
    loopback gRPC, each client training on its own partition written to disk.

    alpha: concentration of the Dirichlet partition (smaller is more skewed).
    epochs, lr, batch_size: as for the server; 0 means the task's default.
    strategy ... topk_fraction: as for the server.
    """

    task: str = "digits-mlp"
    clients: int = 5
    rounds: int = 10
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    out: str = "runs/simulate"
    epochs: int = 0
    lr: float = 0.0
    batch_size: int = 0
    fraction: float = 1.0
    round_timeout_s: float = 120.0
    # Write each client's share as a scatter of mixed formats with a few corrupt files.
    scatter: bool = False
    # Strategy, update kind and encoding (see check_strategy and README "Strategies").
    strategy: str = "fedavg"
    update: str = "weights"
    encoding: str = "f32"
    server_lr: float | None = None
    server_momentum: float | None = None
    mu: float | None = None
    trim: float | None = None
    byzantine_f: int | None = None
    topk_fraction: float = 0.1
    edge: bool = True  # build, ship and install the edge artifact after the last round
    # Scenario knobs and backends (README "Scenarios"); simulation only.
    scenario: str = ""  # the built-in scenario (or file) these settings came from
    backend: str = "auto"  # threads | processes | ray | auto
    workers: int = 0  # processes/ray: how many hosts share the clients (0: one per core)
    ray_address: str = ""  # "": a local Ray instance; else the cluster to join
    min_clients: int = 0  # 0: fraction of the clients present at the start
    quorum_fraction: float = 0.0  # 0: 0.5 when clients drop out or leave, else all
    dropout: float = 0.0  # per client and round: probability it goes silent
    stragglers: float = 0.0  # fraction of clients slowed before each update
    straggler_delay_s: float = 1.0  # mean delay of a straggler
    straggler_distribution: str = "exponential"  # exponential | uniform | fixed
    late_joiners: float = 0.0  # fraction of clients that join only at join_round
    join_round: int = 3
    leavers: float = 0.0  # fraction of clients that leave after leave_round
    leave_round: int = 2
    hostile_clients: float = 0.0  # fraction of clients whose updates are attacks
    attack: str = "signflip"  # signflip | scale | noise
    attack_factor: float = 4.0
    bandwidth_kbps: float = 0.0  # per client and direction, kilobits/s (0: unlimited)

    def __post_init__(self) -> None:
        check_strategy(self, max(1, math.ceil(self.fraction * self.clients)))
        _check_range("clients", self.clients, 1)
        _check_range("rounds", self.rounds, 1)
        _check_range("alpha", self.alpha, 1e-6)
        if self.partition not in PARTITIONS:
            raise ConfigError(f"partition must be one of {PARTITIONS}, got {self.partition!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        check_scenario(self)


PARTITIONS = ("iid", "dirichlet", "quantity", "shards")
STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "median",
              "trimmed-mean", "krum", "multikrum")
UPDATES = UPDATE_KIND_NAMES
ENCODINGS = ENCODING_NAMES
# The strategy settings that only some strategies take, and which ones.
_OWNERS = {"server_momentum": ("fedavgm",), "mu": ("fedprox",), "trim": ("trimmed-mean",),
           "byzantine_f": ("krum", "multikrum")}


def check_strategy(config: Any, updates_per_round: int) -> None:
    """Checks the strategy settings shared by ServerConfig and SimulateConfig, naming the
    key at fault; updates_per_round is the fewest updates a round commits with."""
    for key, allowed in (("strategy", STRATEGIES), ("update", UPDATES),
                         ("encoding", ENCODINGS)):
        if getattr(config, key) not in allowed:
            raise ConfigError(f"{key} must be one of {allowed}, got {getattr(config, key)!r}")
    for key, owners in _OWNERS.items():
        if getattr(config, key) is not None and config.strategy not in owners:
            raise ConfigError(f"{key} applies to strategy {' or '.join(owners)}, not "
                              f"{config.strategy!r}")
    if config.server_lr is not None and config.server_lr <= 0:
        raise ConfigError(f"server_lr must be > 0, got {config.server_lr}")
    if config.server_momentum is not None and not 0 <= config.server_momentum < 1:
        raise ConfigError(f"server_momentum must be in [0, 1), got {config.server_momentum}")
    if config.mu is not None:
        _check_range("mu", config.mu, 0.0)
    if config.trim is not None and not 0 <= config.trim < 0.5:
        raise ConfigError(f"trim must be in [0, 0.5), got {config.trim}")
    if config.byzantine_f is not None:
        _check_range("byzantine_f", config.byzantine_f, 0)
    if not 0 < config.topk_fraction <= 1:
        raise ConfigError(f"topk_fraction must be in (0, 1], got {config.topk_fraction}")
    if config.encoding == "topk" and config.update == "weights":
        raise ConfigError("encoding 'topk' sends a few entries of an update and needs "
                          "update 'delta' or 'gradient' (not 'weights')")
    if config.strategy == "fedprox" and config.update == "gradient":
        raise ConfigError("strategy 'fedprox' adds a proximal term to local training; "
                          "update 'gradient' takes no local step (use 'weights' or 'delta')")
    if config.strategy in ("krum", "multikrum"):
        f = 1 if config.byzantine_f is None else config.byzantine_f
        if updates_per_round < 2 * f + 3:
            raise ConfigError(f"strategy {config.strategy!r} with byzantine_f {f} needs at "
                              f"least {2 * f + 3} updates per round (min_clients), got "
                              f"{updates_per_round}")


BACKENDS = ("auto", "threads", "processes", "ray")
DELAYS = ("exponential", "uniform", "fixed")
ATTACKS = ("signflip", "scale", "noise")


def check_scenario(config: SimulateConfig) -> None:
    """Checks the scenario knobs and backend of a SimulateConfig, naming the key at fault."""
    for key, allowed in (("backend", BACKENDS), ("straggler_distribution", DELAYS),
                         ("attack", ATTACKS)):
        if getattr(config, key) not in allowed:
            raise ConfigError(f"{key} must be one of {allowed}, got {getattr(config, key)!r}")
    for key in ("dropout", "stragglers", "late_joiners", "leavers", "hostile_clients",
                "quorum_fraction"):
        _check_range(key, getattr(config, key), 0.0, 1.0)
    if config.late_joiners + config.leavers + config.hostile_clients > 1.0:
        raise ConfigError("late_joiners + leavers + hostile_clients must be at most 1 "
                          "(they are disjoint groups of clients)")
    for key in ("workers", "min_clients", "straggler_delay_s", "attack_factor",
                "bandwidth_kbps"):
        _check_range(key, getattr(config, key), 0)
    if config.late_joiners:
        _check_range("join_round", config.join_round, 2, config.rounds)
    if config.leavers:
        _check_range("leave_round", config.leave_round, 1, config.rounds)
    if config.ray_address and config.backend != "ray":
        raise ConfigError("ray_address applies to backend 'ray'")


def _check_range(key: str, value: float, low: float, high: float | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{key} must be {bound}, got {value}")


def _check_tls(insecure: bool, has_tls: bool, who: str, flag: str) -> None:
    if insecure and has_tls:
        raise ConfigError(f"the {who} was given both --insecure and {flag}; choose one")
    if not insecure and not has_tls:
        raise ConfigError(f"the {who} needs TLS ({flag}) or, for loopback development "
                          "only, --insecure")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Checks value against a field's type hint, converting lists to tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {hint}, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value))
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{key} must be empty, got {value!r}")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported setting type {hint}")


def build(cls: type[C], values: Mapping[str, Any], source: str = "options") -> C:
    """Makes a config dataclass from values, naming any unknown or mistyped key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; known keys: "
                          f"{', '.join(names)}")
    try:
        coerced = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
        return cls(**coerced)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load(cls: type[C], path: str | Path | None, overrides: Mapping[str, Any]) -> C:
    """Reads a TOML file (if given) and applies overrides (None values are ignored)."""
    values: dict[str, Any] = {}
    source = "options"
    if path is not None:
        source = str(path)
        try:
            values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        nested = [k for k, v in values.items() if isinstance(v, dict)]
        if nested:
            raise ConfigError(f"{path}: unexpected table [{nested[0]}]; settings are "
                              "top-level keys")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build(cls, values, source)
