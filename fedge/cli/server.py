"""``fedge server``: run the aggregation server for a number of rounds."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fedge.cli.options import add_config_option, add_settings, given
from fedge.cli.signals import CleanStop
from fedge.config import ServerConfig


def register(sub: Any) -> None:
    """Adds ``fedge server`` to the command's subparsers."""
    p = sub.add_parser("server", help="run the aggregation server",
                       description="Run the gRPC aggregation server for a number of rounds. "
                       "Restarting on the same --state-dir resumes from the last committed "
                       "round.")
    add_config_option(p, "server")
    add_settings(p, ServerConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serves until the last round (0), a failed run (1) or a signal (0, or 130 on
    SIGINT), with the state dir kept for a restart to resume from."""
    from fedge.config import load
    from fedge.progress import RoundLines
    from fedge.server.app import FedgeServer

    config = load(ServerConfig, args.config, given(args, ServerConfig))
    server = FedgeServer(config, on_round=RoundLines(config.rounds, sys.stderr))
    server.start()
    signals = CleanStop(server.stop)
    records = server.wait()
    last = records[-1].round if records else 0
    if server.rounds.failure:
        print(f"the run failed: {server.rounds.failure}. State is kept in "
              f"{config.state_dir}; a restart resumes from round {last}", file=sys.stderr)
        return 1
    if server.rounds.ended_early:
        print(f"done at round {last} of {config.rounds}: {server.rounds.ended_early}; "
              f"final accuracy {records[-1].accuracy:.4f}; checkpoints in "
              f"{config.state_dir}/checkpoints", file=sys.stderr)
    elif last < config.rounds:
        print(f"stopped at round {last} of {config.rounds}; state is kept in "
              f"{config.state_dir} and a restart resumes from there", file=sys.stderr)
    else:
        print(f"done: {config.rounds} rounds, final accuracy {records[-1].accuracy:.4f}; "
              f"checkpoints in {config.state_dir}/checkpoints", file=sys.stderr)
    deployments = server.deployments
    if deployments is not None and deployments.latest is not None:
        print(f"edge artifact of round {deployments.latest.round}: "
              f"{deployments.latest.directory}; devices trust {deployments.public_key_path}",
              file=sys.stderr)
    signals.raise_if_interrupted()
    return 0
