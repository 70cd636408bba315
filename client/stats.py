"""What a client daemon did: counters for its logs, its tests and its /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DaemonStats:
    """What the daemon did, for logs and tests."""

    rounds_trained: int = 0
    joins: int = 0
    stopped_by_server: bool = False
    last_round: int = 0
    train_seconds: float = 0.0
    bytes_up: int = 0     # update payloads sent
    bytes_down: int = 0   # model payloads received
    edge_installed: int = 0  # edge artifacts verified and installed
    edge_refused: int = 0    # edge artifacts refused (the previous model kept serving)
    edge_version: int = 0    # the round of the edge model installed last (0: none yet)
    updates_refused: int = 0  # updates the server would not fold (logged with its reason)
    trainings: int = 0  # TRAIN tasks trained (each task once, a few times at most)
    # After the last round: held-out accuracy personalized vs global (personalize_epochs).
    personal: dict[str, float] = field(default_factory=dict)

    def update_sent(self, round_: int, nbytes: int) -> None:
        """Counts an update of round_ the server took (nbytes of payload)."""
        self.rounds_trained += 1
        self.last_round = round_
        self.bytes_up += nbytes

    def metrics(self) -> dict[str, tuple[float, str]]:
        """The daemon's Prometheus values (see fedge.metrics.ValuesCollector)."""
        return {
            "fedge_client_rounds_trained_total": (self.rounds_trained, "Updates accepted."),
            "fedge_client_joins_total": (self.joins, "Sessions opened with the server."),
            "fedge_client_last_round": (self.last_round, "The last round trained."),
            "fedge_client_train_seconds_total": (self.train_seconds, "Local training time."),
            "fedge_client_bytes_sent_total": (self.bytes_up, "Update bytes sent."),
            "fedge_client_bytes_received_total": (self.bytes_down, "Model bytes received."),
            "fedge_client_edge_installed_total": (self.edge_installed,
                                                  "Edge artifacts verified and installed."),
            "fedge_client_edge_refused_total": (self.edge_refused, "Edge artifacts refused."),
            "fedge_client_updates_refused_total": (self.updates_refused,
                                                   "Updates the server refused."),
            "fedge_client_edge_model_version": (self.edge_version,
                                                "Round of the edge model installed last."),
        }
