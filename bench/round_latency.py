"""Round latency in deployment mode: fedge against Flower, the same work in the same run.

    python -m bench.round_latency [--clients 4 16] [--rounds 6] [--out FILE.json]
                                  [--threads 1] [--profile DIR] [--keep DIR]

For each client count N both systems run as separate OS processes on loopback, started
as a person would start them:

* fedge: one ``fedge server`` (``--insecure --allow-anonymous --no-edge``) and N
  ``fedge client`` processes, each with ``--data`` pointing at its partition;
* Flower (``flwr``, from the flower extra): one ``flower-superlink``,
  N ``flower-supernode`` processes (``--node-config data-dir=...``) and ``flwr run`` of
  the Flower App in ``bench/flower_app`` (copied next to a generated pyproject.toml):
  its ClientApp trains with fedge's own ``client.trainer.Trainer`` on the same
  partition with the same epochs, lr, batch size and per-round seed, and its ServerApp
  runs Flower's FedAvg over all N nodes with centralized evaluation on the test split
  (fedge evaluates each round at commit) and no federated evaluation.

Both start from the same initial model (``torch.manual_seed(seed)``) and the same IID
partitions (``simulations.partition.split`` with ``--seed``). Seconds per round are
measured server-side from when each round ended: fedge's ``committed_at`` (SQLite,
written at commit) and the time the ServerApp's evaluate_fn recorded after each
aggregation. Round r lasts from the end of round r-1 to the end of round r; round 1
holds start-up (processes importing torch, devices connecting), so the median of rounds
2..R is reported. Otherwise defaults are those of a fresh install: the task's training
settings, Flower's subprocess isolation and default polling. Every process of both
systems runs with ``OMP_NUM_THREADS=1`` (``--threads``), as N devices share this
machine's cores: torch's spinning worker threads otherwise oversubscribe them.
``--profile DIR`` runs fedge's programs under cProfile (``DIR/nN/client-K.prof``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TASK = "digits-mlp"
APP_SOURCES = Path(__file__).parent / "flower_app"
APP_PACKAGE = "fedgeflower"


class Processes:
    """Child processes with their output in log files; all killed on close()."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Starts argv with stdout and stderr in LOGS/name.log."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed by the child)
        # A session of its own, so that close() also reaches what it spawns (Flower's
        # SuperLink and SuperNodes start flwr-serverapp and flwr-clientapp processes).
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        """What the named process has written so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self, *names: str) -> None:
        """Raises with the log tail if one of the named processes has exited."""
        for name in names:
            code = self.procs[name].poll()
            if code is not None:
                raise RuntimeError(f"{name} exited with {code}:\n{self.log(name)[-3000:]}")

    def close(self) -> None:
        """Terminates every child's process group (SIGKILL after 5 s) and reaps it."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        end = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _signal_group(proc, signal.SIGKILL)  # what it spawned, if still there


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)  # the child leads its group (start_new_session)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_partitions(clients: int, seed: int, out: Path) -> list[Path]:
    """The task's training pool split IID among clients, one directory each."""
    from fedge.simulations.partition import split
    from fedge.simulations.partition import write_partitions as write
    from fedge.tasks import load_task

    splits = load_task(TASK).load_data()
    parts = split(splits.train_y, clients, "iid", 0.5, seed)
    return write(splits.train_x, splits.train_y, parts, out)


def training_settings() -> dict[str, Any]:
    """The task's default local training settings, which fedge sends when not told."""
    from fedge.tasks import load_task

    d = load_task(TASK).defaults
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


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _fedge(profile: Path | None, name: str) -> list[str]:
    """The command line of a fedge program, under cProfile (into PROFILE/name.prof) when
    profiling: it profiles the main thread, where the client daemon's loop runs."""
    if profile is None:
        return [_bin("fedge")]
    profile.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "cProfile", "-o", str(profile / f"{name}.prof"), "-m",
            "fedge.cli"]


def run_fedge(dirs: list[Path], rounds: int, seed: int, work: Path,
              timeout: float, profile: Path | None = None) -> dict[str, Any]:
    """fedge server + one fedge client per partition; returns the round end times."""
    from fedge.server.store import StateStore

    port, state = free_port(), work / "fedge-state"
    procs = Processes(work)
    started = time.time()
    try:
        procs.start("fedge-server", [
            *_fedge(profile, "server"), "server", "--task", TASK, "--host", "127.0.0.1",
            "--port", str(port), "--rounds", str(rounds), "--min-clients", str(len(dirs)),
            "--seed", str(seed), "--state-dir", str(state), "--insecure",
            "--allow-anonymous", "--no-edge"])
        for k, directory in enumerate(dirs):
            procs.start(f"fedge-client-{k}", [
                *_fedge(profile, f"client-{k}"), "client", "--server", f"127.0.0.1:{port}",
                "--task", TASK, "--data", str(directory), "--device-id", f"dev-{k}",
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


def write_flower_app(directory: Path, config: dict[str, Any]) -> Path:
    """The Flower App: bench/flower_app's modules plus a pyproject.toml whose
    [tool.flwr.app.config] holds config; returns the app directory."""
    package = directory / APP_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    for source in APP_SOURCES.glob("*.py"):
        shutil.copy(source, package / source.name)
    lines = ["[build-system]", 'requires = ["hatchling"]', 'build-backend = "hatchling.build"',
             "", "[project]", f'name = "{APP_PACKAGE}"', 'version = "1.0.0"',
             'description = "fedge\'s task model trained by Flower, for bench.round_latency"',
             'license = "Apache-2.0"', 'dependencies = ["flwr==1.30.0"]', "",
             "[tool.hatch.build.targets.wheel]", 'packages = ["."]', "",
             "[tool.flwr.app]", 'publisher = "fedge"', "",
             "[tool.flwr.app.components]", f'serverapp = "{APP_PACKAGE}.server_app:app"',
             f'clientapp = "{APP_PACKAGE}.client_app:app"', "", "[tool.flwr.app.config]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    (directory / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return directory


def run_flower(dirs: list[Path], rounds: int, seed: int, work: Path,
               timeout: float) -> dict[str, Any]:
    """flower-superlink + one flower-supernode per partition + flwr run of the app."""
    fleet, control, serverappio = free_port(), free_port(), free_port()
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
        f'address = "127.0.0.1:{control}"\ninsecure = true\n')
    stamps = work / "flower-rounds.json"
    train = training_settings()
    app = write_flower_app(work / "flower-app", {
        "num-server-rounds": rounds, "nodes": len(dirs), "task": TASK, "seed": seed,
        "epochs": train["epochs"], "lr": train["lr"], "batch-size": train["batch_size"],
        "timestamps": str(stamps)})
    # The ServerApp and ClientApp processes Flower spawns are found on PATH.
    env = {"FLWR_HOME": str(home),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    procs = Processes(work)
    started = time.time()
    try:
        procs.start("flower-superlink", [
            _bin("flower-superlink"), "--insecure", "--fleet-api-address",
            f"127.0.0.1:{fleet}", "--control-api-address", f"127.0.0.1:{control}",
            "--serverappio-api-address", f"127.0.0.1:{serverappio}"], env=env, cwd=work)
        for k, directory in enumerate(dirs):
            procs.start(f"flower-supernode-{k}", [
                _bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{fleet}",
                "--clientappio-api-address", f"127.0.0.1:{free_port()}",
                "--node-config", f"data-dir={json.dumps(str(directory))}"], env=env, cwd=work)
        _wait_for_port(control, 60, procs, "flower-superlink")
        submit = subprocess.run([_bin("flwr"), "run", str(app), "bench"], env={
            **os.environ, **env}, cwd=work, capture_output=True, text=True, timeout=120)
        if submit.returncode != 0:
            raise RuntimeError(f"flwr run failed ({submit.returncode}):\n{submit.stdout}\n"
                               f"{submit.stderr}")
        end = time.monotonic() + timeout
        records: list[dict[str, float]] = []
        while len(records) < rounds + 1:
            if time.monotonic() > end:
                raise RuntimeError(f"Flower did not finish {rounds} rounds in {timeout:.0f} "
                                   f"s:\n{procs.log('flower-superlink')[-3000:]}")
            procs.check_alive("flower-superlink")
            time.sleep(0.2)
            if stamps.exists():
                try:
                    records = json.loads(stamps.read_text())
                except json.JSONDecodeError:  # caught mid-write
                    continue
        wall = time.time() - started
    finally:
        procs.close()
    return {"ends": {int(r["round"]): float(r["time"]) for r in records}, "wall_s": wall,
            "accuracy": float(records[-1]["accuracy"])}


def _wait_for_port(port: int, timeout: float, procs: Processes, name: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        procs.check_alive(name)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on port {port} in {timeout:.0f} s")


def measure(clients: int, rounds: int, seed: int, work: Path, systems: list[str],
            timeout: float, profile: Path | None = None) -> list[dict[str, Any]]:
    """Runs each system on the same partitions; one row per system."""
    dirs = write_partitions(clients, seed, work / "data")
    rows = []
    for system in systems:
        try:
            if system == "fedge":
                result = run_fedge(dirs, rounds, seed, work / system, timeout,
                                   profile / f"n{clients}" if profile else None)
            else:
                result = run_flower(dirs, rounds, seed, work / system, timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:  # reported, not fatal
            rows.append({"system": system, "clients": clients, "rounds": rounds,
                         "error": str(exc)[-2000:], "loadavg_1m": os.getloadavg()[0]})
            print(f"  {system} N={clients}: FAILED: {str(exc).splitlines()[0]}",
                  file=sys.stderr, flush=True)
            continue
        durations = per_round(result["ends"])
        rows.append({"system": system, "clients": clients, "rounds": rounds,
                     "s_per_round": steady(durations), "first_round_s": durations.get(1),
                     "round_s": {str(r): s for r, s in durations.items()},
                     "wall_s": result["wall_s"], "accuracy": result["accuracy"],
                     # other work on the machine shows here (it was shared when measured)
                     "loadavg_1m": os.getloadavg()[0]})
        print(f"  {system} N={clients}: {rows[-1]['s_per_round']:.3f} s/round",
              file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table, with Flower's time over fedge's per N."""
    lines = [f"{'clients':>7}  {'system':<7} {'s/round':>9} {'round 1 s':>9} "
             f"{'wall s':>7} {'accuracy':>8} {'flower/fedge':>12}"]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['clients']:>7}  {row['system']:<7} failed: "
                         f"{row['error'].splitlines()[0][:60]}")
            continue
        peers = {r["system"]: r for r in rows
                 if r["clients"] == row["clients"] and "error" not in r}
        ratio = "-"
        if row["system"] == "fedge" and "flower" in peers:
            ratio = f"{peers['flower']['s_per_round'] / row['s_per_round']:.1f}x"
        lines.append(f"{row['clients']:>7}  {row['system']:<7} {row['s_per_round']:>9.3f} "
                     f"{row['first_round_s'] or 0:>9.2f} {row['wall_s']:>7.1f} "
                     f"{row['accuracy']:>8.4f} {ratio:>12}")
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Flower's seconds per round over fedge's, per client count."""
    out = {}
    for n in sorted({r["clients"] for r in rows}):
        peers = {r["system"]: r for r in rows if r["clients"] == n and "error" not in r}
        if {"fedge", "flower"} <= set(peers):
            out[str(n)] = peers["flower"]["s_per_round"] / peers["fedge"]["s_per_round"]
    return out


def _flower_available() -> bool:
    return shutil.which("flower-superlink", path=str(Path(sys.executable).parent)) is not None


def main(argv: list[str] | None = None) -> int:
    """Runs both systems for each client count, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.round_latency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds per run; rounds 2.. are measured (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--systems", nargs="+", choices=("fedge", "flower"),
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
    if "flower" in systems and not _flower_available():
        print("flwr is not installed: skipping Flower (pip install 'fedge[flower]')",
              file=sys.stderr)
        systems.remove("flower")
    if args.threads > 0:  # inherited by every process of both systems
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    rows: list[dict[str, Any]] = []
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fedge-latency-"))
    try:
        for n in args.clients:
            rows += measure(n, args.rounds, args.seed, work / f"n{n}", systems, args.timeout,
                            args.profile)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "round_latency", "task": TASK, "rows": rows,
                               "flower_over_fedge": ratios(rows), "settings":
                               training_settings(), "threads": args.threads,
                               "flwr": _flwr_version(),
                               "python": platform.python_version(),
                               "machine": platform.machine(),
                               "cpus": len(os.sched_getaffinity(0))}, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 1 if any("error" in row for row in rows) else 0


def _flwr_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flwr")
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
