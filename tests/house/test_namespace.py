"""One import name: the installed distribution is ``fedge`` and nothing else, so a user's
own ``client.py``, ``server.py`` or ``edge.py`` never meets ours."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.fleet import free_port
from tests.processes import FEDGE, Processes

ROOT = Path(__file__).resolve().parents[2]

# A user's project in the style of every Flower example: its own client.py, server.py and
# edge.py, imported by its task module. If fedge installed (or put on the path) packages
# of those names, either the task or fedge would get the wrong module.
USER_MODULES = {
    "client.py": "WHO = 'the user client'\n",
    "server.py": "WHO = 'the user server'\n",
    "edge.py": "WHO = 'the user edge'\n",
    "mytask.py": '''
import client, edge, server
from torch import nn

from fedge.tasks import load_task

assert (client.WHO, server.WHO, edge.WHO) == (
    "the user client", "the user server", "the user edge"), "fedge shadowed the user's modules"


def task():
    base = load_task("digits-mlp")
    return base.__class__(**{**base.__dict__, "name": "user-digits"})
''',
}


@pytest.fixture()
def user_project(tmp_path: Path) -> Path:
    for name, text in USER_MODULES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.slow
def test_the_wheel_installs_only_fedge(tmp_path: Path) -> None:
    # Built from a copy: a build leaves build/ and fedge.egg-info/ behind, and an
    # egg-info in the checkout makes pip elsewhere believe fedge is installed.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", "runs", ".*_cache"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-w", str(tmp_path), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    wheel = next(tmp_path.glob("fedge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"fedge"}, top
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["fedge"]
    # The rooms are inside, under fedge/, with the data files they need.
    for path in ("fedge/server/service.py", "fedge/client/daemon.py",
                 "fedge/edge/runtime/verify.py", "fedge/protos/fedge.proto",
                 "fedge/protos/fedge_pb2.py", "fedge/simulations/scenarios/churn.toml"):
        assert path in names, path


@pytest.mark.slow
def test_simulate_runs_beside_a_users_own_client_server_and_edge(user_project: Path) -> None:
    run = subprocess.run([*FEDGE, "simulate", "--task", "mytask:task", "--clients", "2",
                          "--rounds", "1", "--no-edge", "--out", "out"],
                         cwd=user_project, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "final accuracy" in run.stdout


@pytest.mark.slow
def test_client_runs_beside_a_users_own_client_server_and_edge(user_project: Path) -> None:
    procs = Processes(user_project)
    try:
        port = str(free_port())
        subprocess.run([*FEDGE, "data", "partition", "--clients", "1", "--out", "parts"],
                       cwd=user_project, check=True, capture_output=True, timeout=120)
        server = procs.start("server", "server", "--task", "mytask:task", "--insecure",
                             "--allow-anonymous", "--host", "127.0.0.1", "--port", port,
                             "--rounds", "1", "--min-clients", "1", "--no-edge",
                             "--state-dir", "state")
        client = procs.start("client", "client", "--task", "mytask:task", "--server",
                             f"127.0.0.1:{port}", "--data", "parts/client-0",
                             "--device-id", "user-device", "--insecure")
        assert client.wait(timeout=240) == 0, procs.log("client")
        assert server.wait(timeout=60) == 0, procs.log("server")
        assert "round 1 committed" in procs.log("server")
    finally:
        procs.close()
