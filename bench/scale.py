"""Scale benchmark: round time and server memory for 10, 100 and 1,000 clients.

    python -m bench.scale [--clients 10,100,1000] [--rounds 2] [--backend processes]
                          [--relays R [--workers W]] [--out runs/bench-scale]

Each size is one ``fedge simulate`` of digits-mlp (no edge artifact) in its own process.
With the ``processes`` backend (the default here) that process holds only the gRPC server
and the runner: the clients live in worker processes, each with its own channel and
session, so the server sees N devices. Every 0.2 s the bench reads the resident memory of
the simulate process (the server) and of its children (the clients) from /proc; the
table shows the peaks, the median committed round's seconds and the whole run's wall
time, and the server's memory per connected device: the slope of its peak between the
smallest and each larger size. Writes OUT/scale.json. Linux only (/proc).

With ``--relays R`` the devices train under R relays instead, every part in its own
process (bench/scale_relays.py): the server column is then the root's memory, which sees
R devices however many are below them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _rss_kb(pid: int) -> int:
    """The process's resident set in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    """Every descendant of pid, read from /proc/*/stat."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


def run_one(clients: int, rounds: int, backend: str, out: Path) -> dict[str, Any]:
    """One simulate run of `clients` devices; its report's round times and peak memory."""
    settings = out.parent / "scale.toml"  # a round of 1,000 may outlast the default deadline
    settings.write_text("round_timeout_s = 600.0\n")
    command = [sys.executable, "-m", "fedge.cli", "simulate", "--config", str(settings),
               "--clients", str(clients), "--rounds", str(rounds), "--no-edge",
               "--out", str(out)]
    if backend:
        command += ["--backend", backend]
    started = time.perf_counter()
    log = (out.parent / f"simulate-{clients}.log").open("w")
    with subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT) as proc:
        server_peak = clients_peak = 0
        while proc.poll() is None:
            server_peak = max(server_peak, _rss_kb(proc.pid))
            clients_peak = max(clients_peak, sum(_rss_kb(p) for p in _children(proc.pid)))
            time.sleep(0.2)
    log.close()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"simulate with {clients} clients failed (exit {proc.returncode}); "
                         f"see {log.name}")
    report = json.loads((out / "report.json").read_text())
    seconds = [r["seconds"] for r in report["rounds"]]
    return {"clients": clients, "rounds": len(seconds), "round_seconds": seconds,
            "median_round_s": statistics.median(seconds), "wall_s": wall,
            "server_peak_rss_mb": server_peak / 1024,
            "clients_peak_rss_mb": clients_peak / 1024,
            "final_accuracy": report["final"]["accuracy"],
            "participants_last_round": report["rounds"][-1]["clients"]}


def table(rows: list[dict[str, Any]]) -> str:
    """The runs as aligned text."""
    lines = [f"{'clients':>7}  {'round s (median)':>16}  {'wall s':>7}  {'server RSS MB':>13}  "
             f"{'KB/device':>9}  {'clients RSS MB':>14}  {'reported':>8}"]
    for row in rows:
        per = row.get("server_kb_per_device")
        lines.append(f"{row['clients']:>7}  {row['median_round_s']:>16.2f}  {row['wall_s']:>7.1f}  "
                     f"{row['server_peak_rss_mb']:>13.1f}  "
                     f"{'-' if per is None else f'{per:.0f}':>9}  "
                     f"{row['clients_peak_rss_mb']:>14.1f}  {row['participants_last_round']:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="10,100,1000",
                        help="comma-separated client counts (default 10,100,1000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per run (default 2)")
    parser.add_argument("--backend", default="processes",
                        help="simulate backend (default processes: the server alone in "
                        "the measured process; '' for simulate's own default)")
    parser.add_argument("--relays", type=int, default=0,
                        help="devices under this many relays, each in its own process "
                        "(default 0: devices on the server)")
    parser.add_argument("--workers", type=int, default=2,
                        help="with --relays: processes the devices run in (default 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-scale"))
    args = parser.parse_args(argv)
    sizes = sorted(int(c) for c in args.clients.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sizes:
        print(f"scale: {n} clients x {args.rounds} rounds ...", file=sys.stderr, flush=True)
        run = args.out / f"clients-{n}"
        if args.relays:
            from bench.scale_relays import run_relays

            run.mkdir(parents=True, exist_ok=True)
            rows.append(run_relays(n, args.relays, args.rounds, args.workers, run))
        else:
            rows.append(run_one(n, args.rounds, args.backend, run))
    base = rows[0]
    for row in rows[1:]:
        row["server_kb_per_device"] = (
            (row["server_peak_rss_mb"] - base["server_peak_rss_mb"]) * 1024
            / (row["clients"] - base["clients"]))
    result = {"bench": "scale", "task": "digits-mlp", "backend": args.backend,
              "relays": args.relays,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "runs": rows}
    print(table(rows))
    (args.out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'scale.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
