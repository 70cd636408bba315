"""The settings of ``fedge client``, each declared once (see fedge.config.settings)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from fedge.config.personal import Personalization
from fedge.config.settings import check_declared, check_range, check_tls, setting
from fedge.errors import ConfigError


@dataclass(frozen=True)
class ClientConfig(Personalization):
    """Settings of ``fedge client``: each field's declaration says what it does."""

    server: str = setting("127.0.0.1:50051", "HOST:PORT of the server")
    task: str = setting("digits-mlp", "the task, as on the server")
    data: tuple[str, ...] = setting(
        (), "a directory, file or glob of local data (CSV, NumPy, JSON Lines, image "
        "folders); repeatable, a list in a file", shown="none (needed to train)")
    device_id: str = setting(help="this device's id", factory=socket.gethostname,
                             shown="the host name")
    insecure: bool = setting(False, "connect without TLS (loopback development only)")
    tls_ca: str = setting("", "PEM CA certificate to trust")
    tls_cert: str = setting("", "PEM client certificate, for servers that require mTLS")
    tls_key: str = setting("", "PEM key of the client certificate")
    token: str = setting("", "this device's token (prefer the environment variable: "
                         "command lines are visible to other users)", shown="$FEDGE_TOKEN")
    device: str = setting("auto", "auto (CUDA if available), cpu or cuda[:N]")
    precision: str = setting("auto", "training precision: auto (bf16 autocast on a CUDA "
                             "device that supports it, else fp32), fp32 or bf16",
                             choices=("auto", "fp32", "bf16"))
    poll_seconds: float = setting(10.0, "longest wait per poll", low=0.01)
    backoff_initial_s: float = setting(0.5, "first reconnect delay while the server is "
                                       "away", flag=None, low=0.001)
    backoff_max_s: float = setting(30.0, "largest reconnect delay", flag=None)
    metrics_port: int = setting(0, "serve the daemon's Prometheus metrics on "
                                "127.0.0.1:PORT; 0: off", low=0, high=65535)
    # How local files name their fields (see client.data.ReadOptions).
    label_column: str = setting("", "CSV column / JSON Lines key of the label",
                                shown="the task's")
    x_key: str = setting("x", "inputs' array name in .npz/.npy, key in JSON Lines",
                         flag=None)
    y_key: str = setting("y", "labels' array name in .npz/.npy, key in JSON Lines",
                         flag=None)
    debug_report_files: bool = setting(False, "debugging: name skipped files in the "
                                       "metrics sent to the server (by default only "
                                       "counts leave the device)")
    # Without trust_key, DEPLOY tasks are declined.
    trust_key: str = setting("", "the server's edge public key (PEM); shipped edge models "
                             "are installed only if signed by it")
    model_dir: str = setting("fedge-model", "where edge models are installed")
    # Which edge student this device is shipped (fedge.tasks.students).
    device_class: str = setting("", "this device's edge class, one the task defines (a "
                                "tiny student for low-memory boards, ...)",
                                shown="picked by the server from its memory and "
                                "accelerator")
    # What `pip install 'fedge[edge]'` supports: no torch.
    inference_only: bool = setting(False, "never train: only install shipped edge models "
                                   "and report how they do on the data given (needs "
                                   "--trust-key; no torch)")
    # Personalization's own switch on a device (the rest is fedge.config.personal).
    personal_artifact: bool = setting(False, "also export the personalized model as a "
                                      "device-local int8 artifact in MODEL_DIR/personal "
                                      "(unsigned: never installed as the server's)")
    # A Flower project moves to fedge by how it is launched (fedge/flower/client.py).
    flower_client: str = setting("", "run a Flower NumPyClient, Client or client_fn "
                                 "(module:attr) as this device's trainer (needs the "
                                 "flower extra); --data becomes optional")
    flower_node_config: str = setting("", "the Flower client_fn's node_config, as "
                                      "key=value pairs (partition-id=0 num-partitions=4)")

    def __post_init__(self) -> None:
        check_declared(self)
        if not self.device_id:
            raise ConfigError("device_id must not be empty")
        if ":" not in self.server:
            raise ConfigError(f"server must be HOST:PORT, got {self.server!r}")
        check_range("backoff_max_s", self.backoff_max_s, self.backoff_initial_s)
        check_tls(self.insecure, bool(self.tls_ca), "client", "--tls-ca")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: give both or neither")
        if self.tls_cert and self.insecure:
            raise ConfigError("a client certificate (tls_cert) needs TLS; drop --insecure")
        if self.inference_only and not self.trust_key:
            raise ConfigError("inference_only needs trust_key (--trust-key): such a device "
                              "only installs shipped models, and refuses them all without "
                              "the server's public key")
        if self.personalize_epochs and (self.inference_only or self.flower_client):
            raise ConfigError("personalize_epochs fine-tunes the task's torch model: not on "
                              "an inference_only device nor with flower_client")
        if self.flower_client and self.inference_only:
            raise ConfigError("flower_client trains; it does not go with inference_only")
