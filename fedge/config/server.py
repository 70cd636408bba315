"""The settings of ``fedge server``, each declared once (see fedge.config.settings)."""

from __future__ import annotations

from dataclasses import dataclass

from fedge.config.asynchronous import AsyncSettings, check_async, updates_per_version
from fedge.config.lifecycle import LifecycleSettings
from fedge.config.privacy import PrivacySettings, check_privacy
from fedge.config.settings import check_declared, check_tls, setting
from fedge.config.strategy import LocalTraining, StrategySettings, check_strategy
from fedge.errors import ConfigError

NORM_ACTIONS = ("refuse", "clip")


@dataclass(frozen=True)
class ServerConfig(LocalTraining, StrategySettings, PrivacySettings, LifecycleSettings,
                   AsyncSettings):
    """Settings of ``fedge server``: each field's declaration says what it does."""

    task: str = setting("digits-mlp", "built-in task name or package.module:attr")
    host: str = setting("0.0.0.0", "address to listen on")
    port: int = setting(50051, "port to listen on; 0: any free port", low=0, high=65535)
    rounds: int = setting(10, "rounds to run", low=1)
    min_clients: int = setting(2, "updates a round needs to commit (and devices connected "
                               "for it to start)", low=1)
    fraction: float = setting(1.0, "share of connected devices sampled per round", low=0,
                              high=1, low_open=True)
    round_timeout_s: float = setting(300.0, "a round's deadline in seconds, when it commits "
                                     "on its quorum or is retried", flag="--round-timeout",
                                     low=0.1)
    retry_backoff_s: float = setting(2.0, "pause before retrying a round that missed its "
                                     "quorum", flag=None, low=0)
    max_round_attempts: int = setting(
        5, "attempts in a row a round may miss its quorum (retried with a new sample) "
        "before the run stops with an error (exit 1; a restart resumes from the last "
        "committed round); 0 retries forever", flag=None, low=0)
    seed: int = setting(0, "seed of the initial model and of sampling")
    state_dir: str = setting("fedge-state", "checkpoints and round database")
    insecure: bool = setting(False, "serve without TLS (loopback development only)")
    tls_cert: str = setting("", "PEM certificate chain")
    tls_key: str = setting("", "PEM private key")
    poll_seconds: float = setting(10.0, "how long a device's long-poll is held", low=0.01)
    device_timeout_s: float = setting(60.0, "a device not heard from for this long is "
                                      "dropped", flag=None)
    max_update_bytes: int = setting(1 << 30, "largest update accepted, in bytes",
                                    shown="1073741824 = 1 GiB", low=1)
    linger_s: float = setting(
        30.0, "after the last round, how long at most to keep answering polls with STOP "
        "so devices exit cleanly (ends once every live device has been told)", flag=None)
    allow_anonymous: bool = setting(False, "accept devices without a token (their ids are "
                                    "unverified)")
    tls_client_ca: str = setting("", "require client certificates signed by this PEM CA "
                                 "(mTLS)")
    quorum_fraction: float = setting(0.0, "share of sampled devices whose updates commit a "
                                     "round at its deadline; 0: min_clients updates",
                                     low=0, high=1)
    max_update_norm: float = setting(1e6, "bound on an update's L2 distance from the "
                                     "global model; 0: none", low=0)
    norm_action: str = setting("refuse", "refuse an update over the bound, or clip it to "
                               "the bound", choices=NORM_ACTIONS)
    max_examples: int = setting(1 << 31, "largest example count a device may declare for "
                                "one update", shown="2147483648 = 2^31", low=1)
    examples_factor: float = setting(
        1.0, "an update weighs at most this many times the median example count its "
        "round's devices declared at Join (and at most this many times its own); 0: as "
        "declared", low=0)
    norm_factor: float = setting(
        1.5, "updates farther from the global model than this many times the median "
        "distance of the last round's updates are clipped to that; 0: off", low=0)
    warmup_norm_ratio: float = setting(
        1.0, "before any round has a median distance, updates are clipped to this many "
        "times the global model's norm", flag=None, low=0)
    max_uploads: int = setting(32, "update streams received at once; more are refused "
                               "with RESOURCE_EXHAUSTED and the device retries", low=1)
    rate_limit: float = setting(50.0, "requests per second per device (per token), and "
                                "per client address for calls without a token; 0: off",
                                low=0)
    rate_burst: float = setting(100.0, "requests a device may send in a burst", flag=None,
                                low=1)
    stream_idle_s: float = setting(
        60.0, "an upload or model download that sends or takes no message for this long "
        "is cut (the device sees CANCELLED and may retry); so is an upload stream whose "
        "header does not arrive in this time. A message is up to 1 MiB: links slower "
        "than about 150 kbit/s need more", flag=None, low=0.1)
    stream_max_s: float = setting(
        900.0, "longest an upload or model download stream may last; an upload is also "
        "cut at its round's deadline", flag=None, low=0.1)
    anonymous_per_address: int = setting(
        64, "live anonymous devices (--allow-anonymous) one client address may hold; "
        "more joins from it are refused with RESOURCE_EXHAUSTED", flag=None, low=1)
    partial_upload_bytes: int = setting(
        1 << 30, "memory for the received part of update streams that broke, kept (one "
        "per device) so the device resumes from where it stopped; one that does not fit is "
        "dropped and its device starts over; 0: never kept", shown="1073741824 = 1 GiB",
        low=0)
    partial_upload_ttl_s: float = setting(
        300.0, "how long the part of a broken update stream is kept (at most until its "
        "round's deadline)", flag=None, low=0.1)
    spool_threshold_bytes: int = setting(
        64 << 20, "an update of at least this many bytes (f32 encoding, FedAvg family, "
        "synchronous rounds) streams to a file under STATE_DIR/spool and is folded from "
        "there, never whole in memory; smaller ones are received in memory (faster for "
        "small updates); 0: spool every update", shown="67108864 = 64 MiB", low=0)
    spool_budget_bytes: int = setting(
        8 << 30, "disk for spooled updates being received or kept to resume, all "
        "together; an update that does not fit is refused as busy (the device retries)",
        shown="8589934592 = 8 GiB", flag=None, low=0)
    metrics_port: int = setting(0, "serve Prometheus metrics on "
                                "http://HOST:PORT/metrics; 0: off", low=0, high=65535)
    eval_threads: int = setting(0, "torch threads of the server's test evaluation, which "
                                "runs beside the next round (sync mode); 0: all cores",
                                low=0)
    status_interval_s: float = setting(2.0, "how often STATE_DIR/status.json is rewritten "
                                       "for `fedge status`", flag=None, low=0.1)
    # Edge artifacts are built from the task's student model; see server/deploy.py.
    edge: bool = setting(True, "build, sign and ship an edge artifact after the last "
                         "round", flag="--no-edge")
    edge_every: int = setting(0, "also build an edge artifact every N rounds; 0: "
                              "only after the last", low=0)
    max_workers: int = setting(
        256, "RPC worker threads. A long poll holds one, so at most seven eighths of them "
        "hold polls; other devices' polls are answered at once with a jittered "
        "retry_after of 0.25-0.75 x the poll period. Set it above the fleet size for "
        "prompt round starts", low=8, high=16384)

    def __post_init__(self) -> None:
        check_declared(self)
        check_privacy(self)
        check_strategy(self, updates_per_version(self, self.min_clients))
        check_async(self)
        check_tls(self.insecure, bool(self.tls_cert), "server", "--tls-cert/--tls-key")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca and self.insecure:
            raise ConfigError("tls_client_ca (mTLS) needs TLS; drop --insecure and give "
                              "--tls-cert/--tls-key")

