"""The settings of ``fedge relay``, each declared once (see fedge.config.settings).

A relay is a server toward its devices (the first settings, named as ``fedge server``'s)
and one device toward its upstream (the ``upstream`` ones, named as ``fedge client``'s
connection settings with an ``upstream_`` prefix)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from fedge.config.settings import check_declared, check_tls, setting
from fedge.config.strategy import ENCODINGS
from fedge.errors import ConfigError

UPSTREAM = "upstream"  # the docs group of the upstream side's settings


@dataclass(frozen=True)
class RelayConfig:
    """Settings of ``fedge relay``: each field's declaration says what it does."""

    task: str = setting("digits-mlp", "the task, as on the upstream server")
    host: str = setting("0.0.0.0", "address to listen on for devices")
    port: int = setting(50052, "port to listen on for devices; 0: any free port", low=0,
                        high=65535)
    state_dir: str = setting("fedge-relay", "the device tokens and the relay's database")
    insecure: bool = setting(False, "serve devices without TLS (loopback development only)")
    tls_cert: str = setting("", "PEM certificate chain shown to devices")
    tls_key: str = setting("", "PEM private key")
    tls_client_ca: str = setting("", "require device certificates signed by this PEM CA "
                                 "(mTLS)")
    allow_anonymous: bool = setting(False, "accept devices without a token (their ids are "
                                    "unverified)")
    min_clients: int = setting(1, "devices whose updates a round below needs (and devices "
                               "connected before the relay joins its upstream)", low=1)
    fraction: float = setting(1.0, "share of the connected devices sampled per round", low=0,
                              high=1, low_open=True)
    seed: int = setting(0, "seed of the devices' sampling and data shuffling: give the root "
                        "server's --seed for the run a flat fleet would have")
    poll_seconds: float = setting(10.0, "how long a device's long-poll is held", low=0.01)
    encoding: str = setting("f32", "how devices send their updates to this relay (the "
                            "upstream's TRAIN task says how the relay sends its own)",
                            choices=ENCODINGS)
    examples_factor: float = setting(
        1.0, "a device's update weighs at most this many times the median example count "
        "its round's devices declared at Join; 0: as declared", low=0)
    norm_factor: float = setting(
        1.5, "device updates farther than this many times the last round's median "
        "distance are clipped to it; 0: off", low=0)
    max_update_norm: float = setting(1e6, "bound on a device update's L2 distance from the "
                                     "global model; 0: none", low=0)
    metrics_port: int = setting(0, "serve Prometheus metrics on http://HOST:PORT/metrics; "
                                "0: off", low=0, high=65535)
    max_workers: int = setting(256, "RPC worker threads (set it above the number of "
                               "devices below)", low=8, high=16384)
    edge: bool = setting(True, "fetch the upstream's edge artifacts once and offer them to "
                         "the devices", flag="--no-edge")
    start_clients: int = setting(0, "devices to wait for (up to join_wait_s) before joining "
                                 "the upstream; 0: min_clients", low=0)
    join_wait_s: float = setting(60.0, "longest wait for start_clients devices before "
                                 "joining the upstream with those connected", flag=None, low=0)
    upstream: str = setting("", "HOST:PORT of the upstream server (or relay)",
                            shown="required", group=UPSTREAM)
    relay_id: str = setting(help="this relay's device id upstream",
                            factory=socket.gethostname, shown="the host name",
                            group=UPSTREAM)
    upstream_token: str = setting("", "this relay's device token upstream (prefer the "
                                  "environment variable)", shown="$FEDGE_UPSTREAM_TOKEN",
                                  group=UPSTREAM)
    upstream_insecure: bool = setting(False, "connect upstream without TLS (loopback "
                                      "development only)", group=UPSTREAM)
    upstream_tls_ca: str = setting("", "PEM CA certificate to trust upstream", group=UPSTREAM)
    upstream_margin_s: float = setting(
        5.0, "the relay's round closes this long before the upstream's deadline, to leave "
        "time to send its partial aggregate up", low=0, group=UPSTREAM)

    def __post_init__(self) -> None:
        check_declared(self)
        if not self.upstream or ":" not in self.upstream:
            raise ConfigError(f"upstream must be HOST:PORT, got {self.upstream!r}")
        if not self.relay_id:
            raise ConfigError("relay_id must not be empty")
        check_tls(self.insecure, bool(self.tls_cert), "relay", "--tls-cert/--tls-key")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: give both or neither")
        check_tls(self.upstream_insecure, bool(self.upstream_tls_ca), "relay's upstream link",
                  "--upstream-tls-ca")
