"""Round latency in deployment mode: fedge against Flower, the same work in the same run.

    python -m bench.round_latency [--task digits-mlp] [--clients 4 16] [--rounds 6]
                                  [--systems fedge flower flower-process]
                                  [--out FILE.json] [--threads 1] [--profile DIR]
                                  [--keep DIR]

For each client count N both systems run as separate OS processes on loopback, started
as a person would start them:

* fedge: one ``fedge server`` (``--insecure --allow-anonymous --no-edge
  --examples-factor 0 --norm-factor 0``) and N ``fedge client`` processes, each with
  ``--data`` pointing at its partition and named after its folder (``client-K``);
* Flower (``flwr``, from the flower extra): one ``flower-superlink``,
  N ``flower-supernode`` processes (``--node-config data-dir=...``) and ``flwr run`` of
  the Flower App in ``bench/flower_app`` (copied next to a generated pyproject.toml):
  its ClientApp trains with fedge's own ``client.trainer.Trainer`` on the same
  partition with the same epochs, lr, batch size and shuffling seed (fedge's, from the
  run's seed, the device's id and the round), and its ServerApp
  runs Flower's FedAvg over all N nodes with centralized evaluation on the test split
  (fedge evaluates each round at commit) and no federated evaluation;
* ``flower-process``: the same, in Flower's other stock configuration: each SuperNode
  with ``--isolation process`` and a long-running ``flower-superexec`` of its own
  (``bench/flower_deploy.py``).

Both start from the same initial model (``torch.manual_seed(seed)``) and the same IID
partitions (``simulations.partition.split`` with ``--seed``). Seconds per round are
measured server-side from when each round ended: fedge's ``committed_at`` (SQLite,
written at commit) and the time the ServerApp's evaluate_fn recorded after each
aggregation. Round r lasts from the end of round r-1 to the end of round r; round 1
holds start-up (processes importing torch, devices connecting), so the median of rounds
2..R is reported. Each system's *overhead* in a round is the round's time minus its
slowest device's training time, both clients timing the same call (``Trainer.train``'s
own ``train_seconds``: the fedge client reports it with its update, the ClientApp in
its reply's metrics); its median over rounds 2..R is reported beside its share of the
round. ``--task cifar10-resnet`` runs the realistic image task. Otherwise defaults
are those of a fresh install (the task's training settings, Flower's default polling),
but for fedge's fleet-relative update bounds: Flower's FedAvg has none, so the fedge
server folds every update as given, as ``fedge simulate`` does; with its defaults it
would bound honest updates (all four in round 2 at 4 clients) and end at another
accuracy, and equal accuracies are this bench's check that both did the same work.
Every process of both systems runs with ``OMP_NUM_THREADS=1`` (``--threads``), as N
devices share this machine's cores: torch's spinning worker threads otherwise
oversubscribe them.
``--profile DIR`` runs fedge's programs under cProfile (``DIR/nN/client-K.prof``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.flower_deploy import (  # noqa: F401 (APP_PACKAGE, write_flower_app: tests)
    APP_PACKAGE,
    flower_available,
    flwr_version,
    run_flower,
    write_flower_app,
)
from bench.processes import Processes, free_port, program

TASK = "digits-mlp"
FLOWERS = {"flower": "subprocess", "flower-process": "process"}  # system -> isolation


def write_partitions(clients: int, seed: int, out: Path, task: str = TASK) -> list[Path]:
    """The task's training pool split IID among clients, one directory each."""
    from fedge.simulations.partition import split
    from fedge.simulations.partition import write_partitions as write
    from fedge.tasks import load_task

    splits = load_task(task).load_data()
    parts = split(splits.train_y, clients, "iid", 0.5, seed)
    return write(splits.train_x, splits.train_y, parts, out)


def training_settings(task: str = TASK) -> dict[str, Any]:
    """The task's default local training settings, which fedge sends when not told."""
    from fedge.tasks import load_task

    d = load_task(task).defaults
    return {"epochs": d.epochs, "lr": d.lr, "batch_size": d.batch_size}


def per_round(ends: dict[int, float]) -> dict[int, float]:
    """Round r's duration (end of r minus end of r-1) for every round r >= 1."""
    return {r: ends[r] - ends[r - 1] for r in sorted(ends) if r >= 1 and r - 1 in ends}


def steady(durations: dict[int, float]) -> float:
    """The median duration of rounds 2.. (round 1 carries start-up)."""
    later = [s for r, s in durations.items() if r >= 2]
    if not later:
        raise RuntimeError("need at least 2 rounds to leave start-up out")
    return statistics.median(later)


def _fedge(profile: Path | None, name: str) -> list[str]:
    """The command line of a fedge program, under cProfile (into PROFILE/name.prof) when
    profiling: it profiles the main thread, where the client daemon's loop runs."""
    if profile is None:
        return [program("fedge")]
    profile.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "cProfile", "-o", str(profile / f"{name}.prof"), "-m",
            "fedge.cli"]


def run_fedge(dirs: list[Path], rounds: int, seed: int, work: Path,
              timeout: float, profile: Path | None = None, task: str = TASK
              ) -> dict[str, Any]:
    """fedge server + one fedge client per partition; returns the round end times."""
    from fedge.server.store import StateStore

    port, state = free_port(), work / "fedge-state"
    procs = Processes(work)
    started = time.time()
    try:
        procs.start("fedge-server", [
            *_fedge(profile, "server"), "server", "--task", task, "--host", "127.0.0.1",
            "--port", str(port), "--rounds", str(rounds), "--min-clients", str(len(dirs)),
            "--seed", str(seed), "--state-dir", str(state), "--insecure",
            "--allow-anonymous", "--no-edge",
            # Flower's FedAvg bounds no update: fold as it does (as fedge simulate does)
            "--examples-factor", "0", "--norm-factor", "0"])
        for k, directory in enumerate(dirs):
            procs.start(f"fedge-client-{k}", [
                *_fedge(profile, f"client-{k}"), "client", "--server", f"127.0.0.1:{port}",
                "--task", task, "--data", str(directory), "--device-id", directory.name,
                "--insecure"])
        server = procs.procs["fedge-server"]
        try:
            code = server.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"fedge did not finish {rounds} rounds in {timeout:.0f} s:\n"
                               f"{procs.log('fedge-server')[-3000:]}") from exc
        if code != 0:
            raise RuntimeError(f"fedge server exited with {code}:\n"
                               f"{procs.log('fedge-server')[-3000:]}")
        wall = time.time() - started
    finally:
        procs.close()
    store = StateStore(state)
    try:
        ends = store.committed_at()
        accuracy = store.rounds()[-1].accuracy
    finally:
        store.close()
    return {"ends": ends, "wall_s": wall, "accuracy": accuracy}


def overheads(durations: dict[int, float], slowest: dict[int, float]) -> dict[int, float]:
    """Each round's time outside its slowest device's training (round r's duration minus
    the longest train_seconds of r), for the rounds whose training times are known."""
    return {r: d - slowest[r] for r, d in durations.items() if r in slowest}


def fedge_slowest(state: Path) -> dict[int, float]:
    """Each committed round's longest train_seconds, as its devices reported them."""
    from fedge.server.store import StateStore

    store = StateStore(state)
    try:
        out = {}
        for record in store.rounds():
            seconds = store.metric_values(record.round, "train", "train_seconds")
            if seconds:
                out[record.round] = max(seconds.values())
        return out
    finally:
        store.close()


def measure(clients: int, rounds: int, seed: int, work: Path, systems: list[str],
            timeout: float, profile: Path | None = None, task: str = TASK
            ) -> list[dict[str, Any]]:
    """Runs each system on the same partitions; one row per system."""
    dirs = write_partitions(clients, seed, work / "data", task)
    rows = []
    for system in systems:
        try:
            if system == "fedge":
                result = run_fedge(dirs, rounds, seed, work / system, timeout,
                                   profile / f"n{clients}" if profile else None, task)
                result["slowest_train_s"] = fedge_slowest(work / system / "fedge-state")
            else:
                result = run_flower(dirs, rounds, seed, work / system, timeout, task,
                                    training_settings(task), FLOWERS[system])
        except (RuntimeError, subprocess.TimeoutExpired) as exc:  # reported, not fatal
            text = str(exc)  # its first line says what failed, its end shows the log
            rows.append({"system": system, "clients": clients, "rounds": rounds,
                         "error": f"{text.splitlines()[0]}\n{text[-2000:]}",
                         "loadavg_1m": os.getloadavg()[0]})
            print(f"  {system} N={clients}: FAILED: {str(exc).splitlines()[0]}",
                  file=sys.stderr, flush=True)
            continue
        durations = per_round(result["ends"])
        outside = overheads(durations, result["slowest_train_s"])
        rows.append({"system": system, "clients": clients, "rounds": rounds,
                     "s_per_round": steady(durations), "first_round_s": durations.get(1),
                     "round_s": {str(r): s for r, s in durations.items()},
                     "slowest_train_s": {str(r): s
                                         for r, s in result["slowest_train_s"].items()},
                     "overhead_s": steady(outside) if len(outside) > 1 else None,
                     "overhead_share": (steady({r: o / durations[r] for r, o in outside.items()})
                                        if len(outside) > 1 else None),
                     "wall_s": result["wall_s"], "accuracy": result["accuracy"],
                     # other work on the machine shows here (it was shared when measured)
                     "loadavg_1m": os.getloadavg()[0]})
        print(f"  {system} N={clients}: {rows[-1]['s_per_round']:.3f} s/round",
              file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table: seconds per round, the overhead outside the
    slowest device's training (and its share of the round), and each Flower
    configuration's time over fedge's (on fedge's row: the default Flower's)."""
    lines = [f"{'clients':>7}  {'system':<14} {'s/round':>9} {'overhead s':>10} "
             f"{'share':>6} {'round 1 s':>9} {'wall s':>7} {'accuracy':>8} "
             f"{'vs fedge':>9}"]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['clients']:>7}  {row['system']:<14} failed: "
                         f"{row['error'].splitlines()[0][:60]}")
            continue
        peers = {r["system"]: r for r in rows
                 if r["clients"] == row["clients"] and "error" not in r}
        ratio = "-"
        other = "flower" if row["system"] == "fedge" else row["system"]
        if "fedge" in peers and other in peers and other != "fedge":
            ratio = f"{peers[other]['s_per_round'] / peers['fedge']['s_per_round']:.1f}x"
        over = row.get("overhead_s")
        share = row.get("overhead_share")
        lines.append(f"{row['clients']:>7}  {row['system']:<14} {row['s_per_round']:>9.3f} "
                     f"{'-' if over is None else f'{over:.3f}':>10} "
                     f"{'-' if share is None else f'{share:.1%}':>6} "
                     f"{row['first_round_s'] or 0:>9.2f} {row['wall_s']:>7.1f} "
                     f"{row['accuracy']:>8.4f} {ratio:>9}")
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]], flower: str = "flower") -> dict[str, float]:
    """The Flower configuration's seconds per round over fedge's, per client count."""
    out = {}
    for n in sorted({r["clients"] for r in rows}):
        peers = {r["system"]: r for r in rows if r["clients"] == n and "error" not in r}
        if {"fedge", flower} <= set(peers):
            out[str(n)] = peers[flower]["s_per_round"] / peers["fedge"]["s_per_round"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Runs the systems for each client count, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.round_latency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=TASK,
                        help="digits-mlp (default) or the image task cifar10-resnet, ...")
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds per run; rounds 2.. are measured (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--systems", nargs="+", choices=("fedge", *FLOWERS),
                        default=["fedge", "flower"])
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds one system may take for one run")
    parser.add_argument("--out", default="bench/results/round_latency.json")
    parser.add_argument("--keep", help="keep the run directories (logs) under this path")
    parser.add_argument("--profile", type=Path,
                        help="run fedge's programs under cProfile, writing DIR/nN/*.prof")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP threads per process, the same for both systems "
                             "(default 1: N devices share this machine's cores; 0 = "
                             "torch's default)")
    args = parser.parse_args(argv)
    # SIGTERM (a timeout, run_all) ends the run through the finally blocks that stop
    # the children, instead of leaving them orphaned.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 1 is start-up)")
    systems = list(args.systems)
    if set(FLOWERS) & set(systems) and not flower_available():
        print("flwr is not installed: skipping Flower (pip install 'fedge[flower]')",
              file=sys.stderr)
        systems = [s for s in systems if s not in FLOWERS]
    if args.threads > 0:  # inherited by every process of both systems
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    rows: list[dict[str, Any]] = []
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fedge-latency-"))
    try:
        for n in args.clients:
            rows += measure(n, args.rounds, args.seed, work / f"n{n}", systems, args.timeout,
                            args.profile, args.task)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.task}, {args.threads} thread(s) a process")
    print(table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "round_latency", "task": args.task, "rows": rows,
                               "flower_over_fedge": ratios(rows),
                               "flower_process_over_fedge": ratios(rows, "flower-process"),
                               "settings": training_settings(args.task),
                               "threads": args.threads, "flwr": flwr_version(),
                               "python": platform.python_version(),
                               "machine": platform.machine(),
                               "cpus": len(os.sched_getaffinity(0))}, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
