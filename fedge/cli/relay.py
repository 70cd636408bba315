"""``fedge relay``: an aggregator between devices and an upstream server (or relay)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from fedge.cli.options import add_config_option, add_settings, given
from fedge.cli.signals import CleanStop
from fedge.config.relay import RelayConfig


def register(sub: Any) -> None:
    """Adds ``fedge relay`` to the command's subparsers."""
    p = sub.add_parser("relay", help="run a relay between devices and a server",
                       description="Serve devices as a server does and take part upstream as "
                       "one device, sending the example-weighted mean of the devices' "
                       "updates. Ends when the upstream run does.")
    add_config_option(p, "relay")
    add_settings(p, RelayConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Relays until the upstream run ends (0), the upstream refuses the relay (2, with
    its reason) or a signal stops it (0, or 130 on SIGINT)."""
    from fedge.config import load
    from fedge.errors import FedgeError
    from fedge.relay.app import Relay

    options = given(args, RelayConfig)
    if "upstream_token" not in options and os.environ.get("FEDGE_UPSTREAM_TOKEN"):
        options["upstream_token"] = os.environ["FEDGE_UPSTREAM_TOKEN"]
    config = load(RelayConfig, args.config, options)
    relay = Relay(config)
    port = relay.start()
    logging.getLogger("fedge.relay").info("relay %s: serving devices on port %d, upstream %s",
                                          config.relay_id, port, config.upstream)
    signals = CleanStop(relay.stop)
    relay.wait()
    signals.raise_if_interrupted()
    if relay.error:
        raise FedgeError(f"relay {config.relay_id}: {relay.error}")
    print(f"relay {config.relay_id}: done, {relay.uplink.partials} partial aggregate(s) "
          f"sent, {relay.uplink.downloads} model download(s) for its devices",
          file=sys.stderr)
    return 0
