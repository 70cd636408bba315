"""Aggregation strategies: pure functions and small classes over dicts of numpy arrays,
with no gRPC and no I/O, so that they are testable on their own."""
