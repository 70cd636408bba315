"""Flower in deployment mode for bench/round_latency.py: one ``flower-superlink``, one
``flower-supernode`` per partition and ``flwr run`` of the Flower App in
``bench/flower_app``.

Two stock configurations: Flower's defaults (each SuperNode starts the ClientApp in a
subprocess of its own, ``--isolation subprocess``), and ``--isolation process`` with one
long-running ``flower-superexec`` per SuperNode, the deployment Flower's documentation
gives for production. Nothing in Flower is patched.

Flower 1.41 changed these programs, and both releases the flower extra allows are
driven (:func:`programs`; 1.31-1.40 are taken as 1.30 and were not tried):

* 1.30: the SuperLink serves three gRPC APIs on three addresses (``--fleet-api-address``,
  ``--control-api-address``, ``--serverappio-api-address``); each SuperNode serves its
  ClientAppIo API on ``--clientappio-api-address``, which its superexec reaches with
  ``--plugin-type clientapp --appio-api-address``.
* 1.41: the SuperLink serves Fleet, Control and its Runtime API over HTTP on one
  ``--host``/``--port``, which the SuperNodes and ``flwr run`` both address; each
  SuperNode serves its Runtime API on its own ``--host``/``--port``, which its
  superexec reaches with ``--runtime-api-address`` (it picks the app type from the
  task; ``--plugin-type`` is ignored with a warning). The SuperLink installs an app's
  dependencies with ``uv sync`` into a fresh environment unless
  ``--disable-runtime-dependency-installation`` is given: the bench gives it, so the
  apps run in this Python's environment and nothing is downloaded (SuperNodes and
  superexecs install nothing by default). Each superexec still starts a
  ``flwr-clientapp`` process per message, as in 1.30.

The app's pyproject names the installed flwr as its one dependency.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import Processes, free_port, program, wait_for_port

APP_SOURCES = Path(__file__).parent / "flower_app"
APP_PACKAGE = "fedgeflower"
ISOLATIONS = ("subprocess", "process")


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
             'license = "Apache-2.0"', f'dependencies = ["flwr=={flwr_version()}"]', "",
             "[tool.hatch.build.targets.wheel]", 'packages = ["."]', "",
             "[tool.flwr.app]", 'publisher = "fedge"', "",
             "[tool.flwr.app.components]", f'serverapp = "{APP_PACKAGE}.server_app:app"',
             f'clientapp = "{APP_PACKAGE}.client_app:app"', "", "[tool.flwr.app.config]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    (directory / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return directory


@dataclass(frozen=True)
class Deployment:
    """The command line of each Flower program of one run."""

    superlink: list[str]
    supernodes: list[list[str]]
    superexecs: list[list[str]]  # one per SuperNode with isolation "process", else none
    control: int  # the SuperLink's port that ``flwr run`` submits to


def release(version: str | None) -> tuple[int, int]:
    """(major, minor) of a version string; (0, 0) without one."""
    major, _, rest = (version or "0.0").partition(".")
    return int(major), int(rest.partition(".")[0] or 0)


def programs(dirs: list[Path], isolation: str, version: str | None) -> Deployment:
    """Each program's arguments, in the CLI of flwr version (1.41's, or 1.30's before
    it), on free ports of 127.0.0.1; one SuperNode per partition directory."""
    configs = [f"data-dir={json.dumps(str(directory))}" for directory in dirs]
    nodes: list[list[str]] = []
    execs: list[list[str]] = []
    if release(version) >= (1, 41):  # one HTTP port per server: Fleet, Control, Runtime
        control = free_port()
        superlink = [program("flower-superlink"), "--insecure", "--host", "127.0.0.1",
                     "--port", str(control), "--disable-runtime-dependency-installation"]
        for config in configs:
            runtime = free_port()
            nodes.append([program("flower-supernode"), "--insecure", "--superlink",
                          f"127.0.0.1:{control}", "--host", "127.0.0.1", "--port",
                          str(runtime), "--isolation", isolation, "--node-config", config])
            execs.append([program("flower-superexec"), "--insecure",
                          "--runtime-api-address", f"127.0.0.1:{runtime}"])
    else:  # 1.30: a gRPC address per API
        fleet, control = free_port(), free_port()
        superlink = [program("flower-superlink"), "--insecure", "--fleet-api-address",
                     f"127.0.0.1:{fleet}", "--control-api-address", f"127.0.0.1:{control}",
                     "--serverappio-api-address", f"127.0.0.1:{free_port()}"]
        for config in configs:
            appio = f"127.0.0.1:{free_port()}"
            nodes.append([program("flower-supernode"), "--insecure", "--superlink",
                          f"127.0.0.1:{fleet}", "--clientappio-api-address", appio,
                          "--isolation", isolation, "--node-config", config])
            execs.append([program("flower-superexec"), "--insecure", "--plugin-type",
                          "clientapp", "--appio-api-address", appio])
    return Deployment(superlink, nodes, execs if isolation == "process" else [], control)


def run_flower(dirs: list[Path], rounds: int, seed: int, work: Path, timeout: float,
               task: str, train: dict[str, Any], isolation: str = "subprocess"
               ) -> dict[str, Any]:
    """flower-superlink + one flower-supernode per partition (with isolation "process",
    each with its own flower-superexec) + flwr run of the app; returns each round's end
    time and its slowest node's training seconds."""
    deployment = programs(dirs, isolation, flwr_version())
    control = deployment.control
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
        f'address = "127.0.0.1:{control}"\ninsecure = true\n')
    stamps = work / "flower-rounds.json"
    app = write_flower_app(work / "flower-app", {
        "num-server-rounds": rounds, "nodes": len(dirs), "task": task, "seed": seed,
        "epochs": train["epochs"], "lr": train["lr"], "batch-size": train["batch_size"],
        "timestamps": str(stamps)})
    # The ServerApp and ClientApp processes Flower spawns are found on PATH.
    env = {"FLWR_HOME": str(home),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    procs = Processes(work)
    started = time.time()
    try:
        procs.start("flower-superlink", deployment.superlink, env=env, cwd=work)
        for k, argv in enumerate(deployment.supernodes):
            procs.start(f"flower-supernode-{k}", argv, env=env, cwd=work)
        for k, argv in enumerate(deployment.superexecs):  # each node's ClientApp executor
            procs.start(f"flower-superexec-{k}", argv, env=env, cwd=work)
        wait_for_port(control, 60, procs, "flower-superlink")
        submit = subprocess.run([program("flwr"), "run", str(app), "bench"], env={
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
            "accuracy": float(records[-1]["accuracy"]),
            "slowest_train_s": {int(r["round"]): float(r["slowest_train_s"])
                                for r in records if "slowest_train_s" in r}}


def flower_available() -> bool:
    """Whether flwr's programs are installed beside this Python."""
    return shutil.which("flower-superlink", path=str(Path(sys.executable).parent)) is not None


def flwr_version() -> str | None:
    """The installed flwr's version, None without it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flwr")
    except PackageNotFoundError:
        return None
