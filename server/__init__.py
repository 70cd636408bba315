"""The aggregation server: gRPC service, device registry, round state machine,
strategies (pure numpy), and the state directory (SQLite + safetensors checkpoints)."""
