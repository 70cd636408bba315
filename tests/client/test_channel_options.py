"""The daemon's channel holds gRPC's own reconnect backoff to the daemon's settings."""

from __future__ import annotations

from fedge.client.channel import CHANNEL_OPTIONS, channel_options
from fedge.config import ClientConfig


def test_grpc_reconnect_backoff_follows_the_daemons() -> None:
    config = ClientConfig(server="127.0.0.1:1", insecure=True, backoff_initial_s=0.25,
                          backoff_max_s=1.0)
    options = dict(channel_options(config))
    assert options["grpc.initial_reconnect_backoff_ms"] == 250
    assert options["grpc.max_reconnect_backoff_ms"] == 1000  # gRPC's default is 120 s
    assert set(CHANNEL_OPTIONS) <= set(channel_options(config))
