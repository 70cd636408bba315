"""The ``fedge`` command: the parser of every command group, logging, and the single
place where errors become exit codes: 0 done, 1 unexpected failure, 2 a usage, config,
task or data error (with a one-line message), 130 interrupted.

Each command group is a module of fedge.cli that registers its parser and runs its
command; components are imported lazily, per command, so that ``fedge --help`` is quick
and an edge device without torch can run what it needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

# gRPC's C core logs to stderr on its own (a line per failed TLS handshake): fedge says
# what went wrong in its own log and error lines. Set before grpc is first imported;
# a person debugging gRPC itself can still set GRPC_VERBOSITY.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from fedge import __version__
from fedge.cli import client, data, edge, relay, server, simulate, status, tokens
from fedge.errors import FedgeError
from fedge.logs import FORMATS
from fedge.logs import configure as configure_logs

COMMANDS = (server, client, relay, data, simulate, tokens, status, edge)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``fedge`` and all its commands."""
    parser = argparse.ArgumentParser(
        prog="fedge", description="Federated edge training: server, client daemon, "
        "simulation.")
    parser.add_argument("--version", action="version", version=f"fedge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    parser.add_argument("--log-format", dest="log_format", choices=FORMATS, default="text",
                        help="text (default) or json: one object per line, same event names")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one fedge command and returns its exit code."""
    args = build_parser().parse_args(argv)
    # Daemons log their work by default; a simulation shows progress lines instead.
    quiet = logging.WARNING if args.command == "simulate" else logging.INFO
    level = [quiet, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    configure_logs(level, args.log_format)
    try:
        return int(args.func(args))
    except FedgeError as exc:
        print(f"fedge: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = "edge" if exc.name == "onnxruntime" else "train"  # what a device may lack
        print(f"fedge: error: {exc.name} is not installed; this command needs the "
              f"{extra} extras: pip install 'fedge[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedge: interrupted", file=sys.stderr)
        return 130
