"""``fedge data``: split a task's data into client directories, and inspect local data
as a client would read it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedge.config import PARTITIONS
from fedge.errors import FedgeError


def register(sub: Any) -> None:
    """Adds ``fedge data`` to the command's subparsers."""
    p = sub.add_parser("data", help="prepare local data")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    part = data_sub.add_parser(
        "partition", help="split a task's training pool into client directories",
        description="Write OUT/client-0 ... OUT/client-(N-1), each a directory that "
        "`fedge client --data` accepts.")
    part.add_argument("--task", default="digits-mlp")
    part.add_argument("--clients", type=int, required=True)
    part.add_argument("--partition", default="iid", help=", ".join(PARTITIONS))
    part.add_argument("--alpha", type=float, default=0.5,
                      help="Dirichlet concentration (smaller is more skewed)")
    part.add_argument("--seed", type=int, default=0)
    part.add_argument("--out", required=True)
    part.add_argument("--scatter", action="store_true",
                      help="write each share as several folders of mixed formats (CSV, npz, "
                      "JSON Lines, PNG) with a few corrupt files, as a device would hold it")
    part.set_defaults(func=partition)
    _add_data_inspect(data_sub)


def _add_data_inspect(data_sub: Any) -> None:
    p = data_sub.add_parser(
        "inspect", help="scan local data sources and report what a client would read",
        description="Read data sources (directories, files or globs) as `fedge client` "
        "would, and print per source: files read and skipped, records read and skipped "
        "and why, and the label histogram.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--task", default="digits-mlp", help="the task whose schema applies")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--label-column", dest="label_column",
                   help="CSV column / JSON key of the label (default: the task's)")
    p.add_argument("--x-key", dest="x_key", default="x", help="inputs array/key name")
    p.add_argument("--y-key", dest="y_key", default="y", help="labels array/key name")
    p.set_defaults(func=inspect)


def partition(args: argparse.Namespace) -> int:
    """Writes OUT/client-K for each of the clients, and prints each one's size."""
    from fedge.simulations.partition import split, write_partitions
    from fedge.tasks import load_task

    if args.partition not in PARTITIONS:
        raise FedgeError(f"--partition must be one of {PARTITIONS}")
    if args.clients < 1:
        raise FedgeError(f"--clients must be >= 1, got {args.clients}")
    if args.alpha <= 0:
        raise FedgeError(f"--alpha must be > 0, got {args.alpha}")
    task = load_task(args.task)
    splits = task.load_data()
    parts = split(splits.train_y, args.clients, args.partition, args.alpha, args.seed)
    try:
        if args.scatter:
            from fedge.simulations.scatter import write_scatters

            scatters = write_scatters(splits.train_x, splits.train_y, parts, task.schema,
                                      args.out, args.seed)
            dirs = [s.directory for s in scatters]
        else:
            dirs = write_partitions(splits.train_x, splits.train_y, parts, args.out)
    except OSError as exc:
        raise FedgeError(f"cannot write the partitions under --out {args.out}: "
                         f"{exc.strerror or exc}; give a directory this user can create "
                         "and write") from None
    for directory, part in zip(dirs, parts, strict=True):
        print(f"{directory}  {len(part)} examples")
    return 0


def inspect(args: argparse.Namespace) -> int:
    """Prints what a client would read from the sources, and what it would skip."""
    import json

    from fedge.client.data import ReadOptions, inspect_sources
    from fedge.tasks import load_task

    # Nothing to read at all is a mistake; among several paths, a missing one is part of
    # the report (a client would read the others).
    missing = [p for p in args.paths if not set("*?[") & set(p) and not Path(p).exists()]
    if missing and len(missing) == len(args.paths):
        raise FedgeError(f"{missing[0]} does not exist; give the directories, files or "
                         "globs the client would read")
    task = load_task(args.task)
    inventory = inspect_sources(args.paths, task.schema, ReadOptions(
        label_column=args.label_column or "", x_key=args.x_key, y_key=args.y_key))
    if args.json:
        print(json.dumps(inventory.to_dict(), indent=2))
    else:
        print(inventory.format_table())
    return 0
