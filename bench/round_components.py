"""Where fedge's time outside training goes in a round, from a kept round_latency run.

    python -m bench.round_latency --task cifar10-resnet --clients 8 --rounds 6 \\
        --systems fedge --keep KEEP
    python -m bench.round_components KEEP/n8/fedge [--out FILE.json]

From the server's and the clients' logs (one clock: one machine), per round r:

* ``last_update_to_commit_s``: from the last device's "update sent" (its reply: the
  server accepted and folded it) to the server's "round r committed" (aggregate, step,
  checkpoint and row; before this change, also the test evaluation);
* ``commit_to_open_s``: from that commit to "round r+1: training on" (install, the
  sample, the tasks handed out);
* ``evaluation_s``: the server's test evaluation of round r, as it logs it, when it runs
  in the background (``round r evaluated ... (x s)``; absent when it ran in the commit).

The medians over rounds 2..R-1 are printed (round 1 holds start-up; round R opens none).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
SENT = re.compile(r": round (\d+) update sent \(update accepted")
COMMITTED = re.compile(r"\] round (\d+) committed")
OPENED = re.compile(r"\] round (\d+): training on")
EVALUATED = re.compile(r"\] round (\d+) evaluated: .*\(([\d.]+) s\)")


def _time(line: str) -> float | None:
    match = STAMP.match(line)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def components(run: Path) -> dict[int, dict[str, float]]:
    """Per round, the components above from the logs under run (a fedge run directory)."""
    sent: dict[int, float] = {}
    committed: dict[int, float] = {}
    opened: dict[int, float] = {}
    evaluated: dict[int, float] = {}
    for path in sorted(run.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            at = _time(line)
            if at is None:
                continue
            if m := SENT.search(line):
                sent[int(m.group(1))] = max(sent.get(int(m.group(1)), 0.0), at)
            elif m := COMMITTED.search(line):
                committed[int(m.group(1))] = at
            elif m := OPENED.search(line):
                opened[int(m.group(1))] = at
            elif m := EVALUATED.search(line):
                evaluated[int(m.group(1))] = float(m.group(2))
    out: dict[int, dict[str, float]] = {}
    for r, at in sorted(committed.items()):
        row: dict[str, float] = {}
        if r in sent:
            row["last_update_to_commit_s"] = at - sent[r]
        if r + 1 in opened:
            row["commit_to_open_s"] = opened[r + 1] - at
        if r in evaluated:
            row["evaluation_s"] = evaluated[r]
        out[r] = row
    return out


def medians(rows: dict[int, dict[str, float]]) -> dict[str, float]:
    """Each component's median over rounds 2..R-1 (those that have it)."""
    keys = ("last_update_to_commit_s", "commit_to_open_s", "evaluation_s")
    steady = [row for r, row in rows.items() if 2 <= r < max(rows)] or list(rows.values())
    return {k: statistics.median([row[k] for row in steady if k in row])
            for k in keys if any(k in row for row in steady)}


def main(argv: list[str] | None = None) -> int:
    """Prints the per-round components and their medians; writes them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a kept fedge run directory (KEEP/nN/fedge)")
    parser.add_argument("--out", help="write the components here as JSON")
    args = parser.parse_args(argv)
    rows = components(Path(args.run))
    print(f"{'round':>5}  {'last update->commit s':>21}  {'commit->open s':>14}  "
          f"{'evaluation s':>12}")
    for r, row in rows.items():
        cells = [f"{row[k]:.3f}" if k in row else "-" for k in
                 ("last_update_to_commit_s", "commit_to_open_s", "evaluation_s")]
        print(f"{r:>5}  {cells[0]:>21}  {cells[1]:>14}  {cells[2]:>12}")
    summary = medians(rows)
    print("median (rounds 2..R-1): " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    if args.out:
        result: dict[str, Any] = {"rounds": {str(r): v for r, v in rows.items()},
                                  "median": summary}
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
