"""Simulation wall time: ``fedge simulate`` against Flower's ``run_simulation`` (Ray).

    python -m bench.simulate_wall [--clients 4] [--rounds 3] [--repeats 1] [--out FILE]

Both run the same work as whole OS processes, one after the other in the same run, and
the wall time of each process (start to exit: interpreter, imports, data, partitions,
start-up of the engine, all rounds, shut-down) is what is compared:

* fedge: ``fedge simulate --clients N --rounds R --seed S --no-edge`` (a real gRPC server
  and N client daemons as threads; the edge step is off because Flower has none);
* Flower: ``python -m bench.simulate_wall --flower-child ...``, which writes the same IID
  partitions (``simulations.partition.split`` with the same seed, as ``fedge simulate``
  does inside its own wall time) and calls ``flwr.simulation.run_simulation`` with the
  ServerApp and ClientApp of ``bench/flower_app`` (FedAvg over all N nodes; each ClientApp
  trains with fedge's own trainer, the task's epochs, lr and batch size, fedge's
  per-round seed; the global model is evaluated centrally each round), on Flower's
  default Ray backend and default client resources.

Flower needs ``flwr`` and Ray (``pip install 'fedge[flower]'`` brings flwr[simulation]
1.41.0 and the ray==2.55.1 it requires; with 1.30.0, ray==2.51.1). With ``--repeats`` > 1
each system runs that many times (alternating) and the median wall time is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TASK = "digits-mlp"
REPO = Path(__file__).resolve().parent.parent


def flower_child(out: Path, clients: int, rounds: int, seed: int) -> dict[str, Any]:
    """Flower's side, in this process: partitions, then run_simulation."""
    from flwr.simulation import run_simulation

    from bench.flower_app import client_app, server_app
    from bench.round_latency import training_settings, write_partitions

    write_partitions(clients, seed, out / "data")
    train = training_settings()
    stamps = out / "flower-rounds.json"
    settings = {"num-server-rounds": rounds, "nodes": clients, "task": TASK, "seed": seed,
                "epochs": train["epochs"], "lr": train["lr"],
                "batch-size": train["batch_size"], "timestamps": str(stamps),
                "data-root": str(out / "data")}
    run_simulation(server_app=server_app.build(settings),
                   client_app=client_app.build(settings), num_supernodes=clients)
    records = json.loads(stamps.read_text())
    if len(records) < rounds + 1:
        raise RuntimeError(f"Flower ran {len(records) - 1} of {rounds} rounds")
    return {"accuracy": float(records[-1]["accuracy"]), "rounds": len(records) - 1}


def _timed(argv: list[str], cwd: Path, env: dict[str, str], timeout: float,
           log: Path) -> float:
    started = time.perf_counter()
    with log.open("wb") as out:
        done = subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited with {done.returncode}:\n"
                           f"{log.read_text(errors='replace')[-3000:]}")
    return seconds


def run_fedge(work: Path, clients: int, rounds: int, seed: int, timeout: float
              ) -> dict[str, Any]:
    """One ``fedge simulate`` process; its wall time and final accuracy."""
    out = work / "fedge"
    seconds = _timed([str(Path(sys.executable).parent / "fedge"), "simulate", "--clients",
                      str(clients), "--rounds", str(rounds), "--seed", str(seed),
                      "--no-edge", "--out", str(out)], work, {}, timeout,
                     work / "fedge.log")
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": seconds, "accuracy": report["final"]["accuracy"]}


def run_flower(work: Path, clients: int, rounds: int, seed: int, timeout: float
               ) -> dict[str, Any]:
    """One Flower run_simulation process; its wall time and final accuracy."""
    out = work / "flower"
    result = work / "flower-result.json"
    # Ray's workers unpickle the apps by module name: they need the repository on the path.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")]))}
    seconds = _timed([sys.executable, "-m", "bench.simulate_wall", "--flower-child",
                      str(out), "--clients", str(clients), "--rounds", str(rounds),
                      "--seed", str(seed), "--out", str(result)], REPO, env, timeout,
                     work / "flower.log")
    return {"wall_s": seconds, **json.loads(result.read_text())}


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table, with Flower's wall time over fedge's."""
    lines = [f"{'system':<26} {'clients':>7} {'rounds':>6} {'wall s':>8} {'accuracy':>8} "
             f"{'flower/fedge':>12}"]
    by = {r["system"]: r for r in rows}
    for row in rows:
        ratio = "-"
        if row["system"] == "fedge simulate" and "flower run_simulation" in by:
            ratio = f"{by['flower run_simulation']['wall_s'] / row['wall_s']:.1f}x"
        lines.append(f"{row['system']:<26} {row['clients']:>7} {row['rounds']:>6} "
                     f"{row['wall_s']:>8.1f} {row['accuracy']:>8.4f} {ratio:>12}")
    return "\n".join(lines)


def _flower_available() -> bool:
    try:
        import flwr.simulation  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Runs both simulations as subprocesses, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.simulate_wall",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per system (alternating); the median is reported")
    parser.add_argument("--systems", nargs="+", choices=("fedge", "flower"),
                        default=["fedge", "flower"])
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", default="bench/results/simulate_wall.json")
    parser.add_argument("--flower-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flower_child:
        result = flower_child(args.flower_child, args.clients, args.rounds, args.seed)
        Path(args.out).write_text(json.dumps(result))
        return 0
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    systems = list(args.systems)
    if "flower" in systems and not _flower_available():
        print("flwr or ray is not installed: skipping Flower (pip install 'fedge[flower]')",
              file=sys.stderr)
        systems.remove("flower")
    runners = {"fedge": ("fedge simulate", run_fedge),
               "flower": ("flower run_simulation", run_flower)}
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory(prefix="fedge-simwall-") as tmp:
        for repeat in range(args.repeats):
            for system in systems:
                work = Path(tmp) / f"{system}-{repeat}"
                work.mkdir()
                result = runners[system][1](work, args.clients, args.rounds, args.seed,
                                            args.timeout)
                runs[system].append(result)
                print(f"  {runners[system][0]}: {result['wall_s']:.1f} s", file=sys.stderr,
                      flush=True)
    rows = [{"system": runners[s][0], "clients": args.clients, "rounds": args.rounds,
             "wall_s": statistics.median(r["wall_s"] for r in runs[s]),
             "wall_s_runs": [r["wall_s"] for r in runs[s]],
             "accuracy": runs[s][-1]["accuracy"], "loadavg_1m": os.getloadavg()[0]}
            for s in systems]
    print(table(rows))
    ratio = None
    if len(rows) == 2:
        ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "simulate_wall", "task": TASK, "rows": rows,
                               "flower_over_fedge": ratio, "flwr": _version("flwr"),
                               "ray": _version("ray"), "python": platform.python_version(),
                               "machine": platform.machine(),
                               "cpus": len(os.sched_getaffinity(0))}, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
