"""The aggregation server: gRPC service, device registry, round state machine,
strategies (pure numpy), and the state directory (SQLite + safetensors checkpoints)."""

import fedge  # noqa: F401  (first: it sets OpenMP's wait policy before anything loads torch)
