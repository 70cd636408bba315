"""``fedge simulate``: a real server and N real client daemons on loopback gRPC."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fedge.cli.options import add_config_option, add_settings, given
from fedge.config import SimulateConfig


def register(sub: Any) -> None:
    """Adds ``fedge simulate`` to the command's subparsers."""
    p = sub.add_parser("simulate", help="run a local multi-client simulation",
                       description="Start a real server and N real client daemons on "
                       "loopback gRPC, train, and write OUT/report.json.")
    add_config_option(p, "simulation")
    add_settings(p, SimulateConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs the simulation: 0 done, 1 when the run stopped early, 130 interrupted (Ctrl-C
    while the clients train ends with a report of the rounds that committed)."""
    import contextlib
    import signal
    from pathlib import Path

    from fedge.progress import RoundBar, RoundLines
    from fedge.simulations.report import format_table
    from fedge.simulations.runner import simulate
    from fedge.simulations.scenario import load_simulation

    # The scenario is read first and names itself in the report: it is not an override.
    config = load_simulation(args.scenario, args.config,
                             given(args, SimulateConfig, skip=("scenario",)))
    # A shell starts a background job (`fedge simulate &`) with SIGINT ignored, and
    # Python then keeps it ignored: Ctrl-C and `kill -INT` must stop a simulation anyway.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    scenario = f", scenario {config.scenario}" if config.scenario else ""

    def announce() -> None:
        print(f"simulating {config.clients} clients x {config.rounds} rounds of "
              f"{config.task} ({config.partition}{scenario}, backend {config.backend}) into "
              f"{config.out}", file=sys.stderr, flush=True)

    bar = RoundBar(config.rounds, sys.stderr) if sys.stderr.isatty() else None
    with bar if bar is not None else contextlib.nullcontext():
        report = simulate(config, on_round=bar or RoundLines(config.rounds, sys.stderr),
                          on_start=announce)
    print(format_table(report))
    outputs = ", ".join(f"{config.out}/{name}" for name in ("report.json", "summary.md",
                                                            "accuracy.png")
                        if (Path(config.out) / name).exists())
    print(f"outputs: {outputs}", file=sys.stderr)
    if report.get("interrupted"):
        done = len([r for r in report["rounds"] if r["round"] > 0])
        print(f"interrupted after {done} of {config.rounds} rounds; the report covers the "
              "rounds that committed", file=sys.stderr)
        return 130
    if report.get("failure"):
        print(f"the run stopped early: {report['failure']}", file=sys.stderr)
        return 1
    return 0
