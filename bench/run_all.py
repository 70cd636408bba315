"""Every benchmark in one go: runs each as its own ``python -m bench.NAME`` process (so one
does not disturb the next), collects their JSON into one file and prints one summary.

    python -m bench.run_all [--quick] [--only NAME ...] [--out bench/results/all.json]

Without ``--quick`` each bench runs at its default size; ``--quick`` uses the smallest
sizes that still measure the same things (fewer K, fewer rounds, the 4-client case of
round_latency only). ``scale`` runs when ``bench/scale.py`` exists. A bench that fails
is reported as failed (with its exit code and the tail of its output) and the others
still run; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# name -> (arguments at the default size, arguments for --quick); "{out}" is the JSON path
# ("{dir}" for edge and scale: a directory, where they write NAME.json).
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "aggregate": (["--out", "{out}"], ["--ks", "10", "100", "--repeats", "3", "--out", "{out}"]),
    "edge": (["--out", "{dir}"], ["--out", "{dir}"]),
    "round_latency": (["--out", "{out}"], ["--clients", "4", "--rounds", "4", "--out", "{out}"]),
    "simulate_wall": (["--out", "{out}"], ["--out", "{out}"]),
    "scale": (["--out", "{dir}"], ["--clients", "10,100", "--out", "{dir}"]),
    "privacy": (["--out", "{out}"], ["--rounds", "5", "--out", "{out}"]),
    "personalization": (["--out", "{out}"], ["--seeds", "0", "--out", "{out}"]),
    "gpu": (["--out", "{out}"], ["--examples", "128", "--out", "{out}"]),
    "async": (["--out", "{out}"], ["--rounds", "4", "--versions", "16", "--target", "0.9",
                                   "--out", "{out}"]),
}


def available() -> list[str]:
    """The benches present in this checkout, in the order they run."""
    return [name for name in BENCHES if (BENCH / f"{name}.py").exists()]


def command(name: str, quick: bool, work: Path) -> tuple[list[str], Path]:
    """The argv that runs one bench and the JSON file it will write."""
    default, fast = BENCHES[name]
    directory = work / name
    out = (directory / f"{name}.json" if name in ("edge", "scale")
           else work / f"{name}.json")
    args = [a.replace("{out}", str(out)).replace("{dir}", str(directory))
            for a in (fast if quick else default)]
    return [sys.executable, "-m", f"bench.{name}", *args], out


def run_one(name: str, quick: bool, work: Path, timeout: float) -> dict[str, Any]:
    """Runs one bench; returns its outcome, table and JSON."""
    argv, out = command(name, quick, work)
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout = -1, _text(exc.stdout)
        stderr = _text(exc.stderr) + f"\ntimed out after {timeout:.0f} s"
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"name": name, "command": " ".join(argv[1:]),
                              "exit_code": code, "seconds": seconds, "table": stdout.strip("\n")}
    if out.exists():
        result["result"] = json.loads(out.read_text())
    # edge exits 1 when one of its claims fails but still measured everything.
    if code != 0 and "result" not in result:
        result["error"] = stderr.strip()[-2000:]
    return result


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def summary(results: list[dict[str, Any]]) -> str:
    """Each bench's own table under a header line, failures with their reason."""
    blocks = []
    for r in results:
        status = "ok" if r["exit_code"] == 0 else f"exit {r['exit_code']}"
        head = f"== {r['name']} ({status}, {r['seconds']:.0f} s): python -m bench.{r['name']}"
        body = r["table"] or r.get("error", "")
        blocks.append(f"{head}\n{body}")
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    """Runs the benches one after another, prints the tables, writes the combined JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.run_all",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smallest useful sizes")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one bench may take (default 1800)")
    parser.add_argument("--out", default="bench/results/all.json")
    args = parser.parse_args(argv)
    names = [n for n in available() if not args.only or n in args.only]
    results = []
    with tempfile.TemporaryDirectory(prefix="fedge-bench-") as tmp:
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.append(run_one(name, args.quick, Path(tmp), args.timeout))
            print(f"  {name}: exit {results[-1]['exit_code']} in "
                  f"{results[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(summary(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "benches": results,
                               "python": platform.python_version(),
                               "platform": platform.platform(),
                               "cpus": len(os.sched_getaffinity(0)),
                               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                              indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    failed = [r["name"] for r in results if r["exit_code"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
