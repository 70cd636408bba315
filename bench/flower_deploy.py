"""Flower in deployment mode for bench/round_latency.py: one ``flower-superlink``, one
``flower-supernode`` per partition and ``flwr run`` of the Flower App in
``bench/flower_app``.

Two stock configurations: Flower's defaults (each SuperNode starts the ClientApp in a
subprocess of its own, ``--isolation subprocess``), and ``--isolation process`` with one
long-running ``flower-superexec --plugin-type clientapp`` per SuperNode, the deployment
Flower's documentation gives for production. Nothing in Flower is patched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
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
             'license = "Apache-2.0"', 'dependencies = ["flwr==1.30.0"]', "",
             "[tool.hatch.build.targets.wheel]", 'packages = ["."]', "",
             "[tool.flwr.app]", 'publisher = "fedge"', "",
             "[tool.flwr.app.components]", f'serverapp = "{APP_PACKAGE}.server_app:app"',
             f'clientapp = "{APP_PACKAGE}.client_app:app"', "", "[tool.flwr.app.config]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    (directory / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return directory


def run_flower(dirs: list[Path], rounds: int, seed: int, work: Path, timeout: float,
               task: str, train: dict[str, Any], isolation: str = "subprocess"
               ) -> dict[str, Any]:
    """flower-superlink + one flower-supernode per partition (with isolation "process",
    each with its own flower-superexec) + flwr run of the app; returns each round's end
    time and its slowest node's training seconds."""
    fleet, control, serverappio = free_port(), free_port(), free_port()
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
        procs.start("flower-superlink", [
            program("flower-superlink"), "--insecure", "--fleet-api-address",
            f"127.0.0.1:{fleet}", "--control-api-address", f"127.0.0.1:{control}",
            "--serverappio-api-address", f"127.0.0.1:{serverappio}"], env=env, cwd=work)
        for k, directory in enumerate(dirs):
            appio = f"127.0.0.1:{free_port()}"
            procs.start(f"flower-supernode-{k}", [
                program("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{fleet}",
                "--clientappio-api-address", appio, "--isolation", isolation,
                "--node-config", f"data-dir={json.dumps(str(directory))}"], env=env, cwd=work)
            if isolation == "process":  # the long-running ClientApp executor of that node
                procs.start(f"flower-superexec-{k}", [
                    program("flower-superexec"), "--insecure", "--plugin-type", "clientapp",
                    "--appio-api-address", appio], env=env, cwd=work)
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
