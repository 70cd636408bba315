"""docs/deployment.md, run: the install from a wheel built from the checkout, every `sh`
block in order on loopback with the fedge that install made, then the services' `console`
blocks under a temporary root, then the units' own commands."""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fleet import free_port

REPO = Path(__file__).parents[2]
GUIDE = REPO / "docs" / "deployment.md"
UNITS = REPO / "deploy" / "systemd"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(720)]
# Inside the test's own timeout, so a stuck guide fails here, with its logs, instead of
# being killed by pytest-timeout with nothing to read.
GUIDE_TIMEOUT_S = 600
# What a root-owned install touches, moved under the temporary root.
SYSTEM_PATHS = re.compile(r"(?<![\w.])(/etc/|/var/lib/|/opt/fedge|/srv/|/usr/local/bin)")
# Commands that need a real system: systemd itself and the system user.
SKIPPED = re.compile(r"^\s*(sudo\s+)?(systemctl|journalctl|useradd)\b")
# The last line of the devices' files in section 5.
DEVICE_FILE = 'model_dir = "models/cam-$k"\n'
# The pip of a venv made --without-pip: this environment's, installing into that venv.
PIP = '#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n'


def blocks(text: str) -> list[tuple[str, str]]:
    """(kind, body) of every sh and console block, in order."""
    return re.findall(r"^```(sh|console)\n(.*?)^```", text, flags=re.S | re.M)


def unprivileged(script: str, root: Path, site: str) -> str:
    """A console block as an ordinary user runs it under root: paths moved, sudo and
    owners dropped, systemd skipped; pip offline, its venv seeing this one's packages."""
    lines = []
    for line in script.splitlines():
        if SKIPPED.match(line):
            lines.append(f": skipped {shlex.quote(line.strip())}")
            continue
        line = re.sub(r"\bsudo (-u \S+ )?", "", line)
        if re.match(r"\s*install\b", line):
            line = re.sub(r" -[og] \S+", "", line)  # owners: the test user owns all
        line = SYSTEM_PATHS.sub(lambda m: f"{root}{m[1]}", line)
        line = line.replace("pip wheel ", "pip wheel --no-build-isolation ")
        line = line.replace("pip install ", "pip install --no-index ")
        venv = re.match(r"\s*python3 -m venv (\S+)$", line)
        if venv:  # the dependencies are this environment's (no download of torch here)
            pth = f"{venv[1]}/lib/python{sys.version_info[0]}.{sys.version_info[1]}"
            # Without ensurepip's own pip and old setuptools (which would hide this one's,
            # that torch asks for; and ensurepip is 5 s): its bin/pip runs this one's pip,
            # found through the .pth, installing into the new environment.
            line = (f"{line.replace(' -m venv ', ' -m venv --without-pip ')}"
                    f" && echo {shlex.quote(site)} > {pth}/site-packages/_parent.pth"
                    f" && printf %s {shlex.quote(PIP)} > {venv[1]}/bin/pip"
                    f" && chmod +x {venv[1]}/bin/pip")
        lines.append(line)
    return "\n".join(lines)


def run_script(script: str, cwd: Path, env: dict[str, str], out: Path) -> int | None:
    """Runs script with bash -euxo pipefail; its output to a file (a background process
    it leaves behind would hold a pipe open); kills whatever it left running."""
    with out.open("w") as sink:
        proc = subprocess.Popen(["bash", "-euxo", "pipefail", "-c", script], cwd=cwd,
                                env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout=GUIDE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return returncode


def logs_of(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                     for p in sorted(folder.glob("*.log")))


def unit_command(name: str, root: Path) -> tuple[list[str], dict[str, str], Path]:
    """A unit's ExecStart, environment file and working directory, under root."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(root / "etc" / "systemd" / "system" / name)
    service = unit["Service"]

    def moved(text: str) -> str:
        return SYSTEM_PATHS.sub(lambda m: f"{root}{m[1]}", text)

    env: dict[str, str] = {}
    if "EnvironmentFile" in service:
        path = Path(moved(service["EnvironmentFile"].lstrip("-")))
        if path.exists():
            for line in path.read_text().splitlines():
                key, _, value = line.partition("=")
                if key and not key.startswith("#"):
                    env[key.strip()] = value.strip()
    cwd = Path(moved(service["WorkingDirectory"]))
    cwd.mkdir(parents=True, exist_ok=True)  # systemd's StateDirectory= makes it
    return shlex.split(moved(service["ExecStart"])), env, cwd


def test_the_deployment_guide_runs_as_written(tmp_path: Path) -> None:
    root, work, checkout = tmp_path / "root", tmp_path / "work", tmp_path / "checkout"
    work.mkdir()
    for folder in ("etc", "var/lib", "opt", "srv", "usr/local/bin"):  # as on any system
        (root / folder).mkdir(parents=True)
    shutil.copytree(REPO, checkout, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "runs", ".*_cache"))
    site = next(p for p in sys.path if p.endswith("site-packages"))
    found = blocks(GUIDE.read_text())
    first_sh = next(i for i, (kind, _) in enumerate(found) if kind == "sh")
    build, *install = [body for _, body in found[:first_sh]]
    services = [body for kind, body in found[first_sh:] if kind == "console"]
    walk = [body for kind, body in found if kind == "sh"]
    assert "pip wheel" in build and len(walk) >= 8 and len(services) == 2
    script = "\n".join([
        f"cd {shlex.quote(str(checkout))}", unprivileged(build, root, site),
        # What the guide asks to copy to every machine.
        f"cd {shlex.quote(str(work))}", f"cp -r {checkout}/dist {checkout}/deploy .",
        f"mkdir docs && cp {checkout}/docs/deployment.md docs/",
        *(unprivileged(body, root, site) for body in install),
        # From here on `fedge` is the one the wheel installed.
        f"export PATH={root}/usr/local/bin:$PATH", "command -v fedge",
        *walk, *(unprivileged(body, root, site) for body in services)])
    # The devices retry at most a second apart (the default cap is 30 s): in section 7 the
    # restarted server otherwise waits out their backoff, 20 to 50 s of this test.
    assert script.count(DEVICE_FILE) == 1
    script = script.replace(DEVICE_FILE, f"{DEVICE_FILE}backoff_max_s = 1\n")
    port, metrics_port = free_port(), free_port()
    script = script.replace("50051", str(port)).replace("9464", str(metrics_port))
    # Without PYTHONPATH: the guide is what a user runs, and a checkout on the path would
    # make pip take fedge as installed and skip the wheel the guide installs.
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    returncode = run_script(script, work, env, tmp_path / "guide.out")
    stdout = (tmp_path / "guide.out").read_text(errors="replace")
    assert returncode == 0, (f"guide {'timed out' if returncode is None else 'failed'} "
                             f"(rc={returncode})\n{stdout[-6000:]}\n{logs_of(work)}")
    installed = root / "opt" / "fedge" / "venv"
    assert f"+ command -v fedge\n{root}/usr/local/bin/fedge" in stdout
    assert list(installed.glob("lib/python*/site-packages/fedge/server/service.py"))

    # The loopback walk-through.
    assert "resuming from committed round" in (work / "server-restarted.log").read_text()
    status = json.loads((work / "status.json").read_text())
    assert sorted(d["device_id"] for d in status["devices"]) == ["cam-1", "cam-2"]
    assert "phase done" in stdout and "round 12/12" in stdout
    assert "fedge_devices_connected 2.0" in stdout
    for k in (1, 2):
        assert "joined" in (work / f"cam-{k}.log").read_text()
        assert (work / "models" / f"cam-{k}" / "current.json").exists()
    assert (work / "rollout" / "model.onnx").exists()

    # The services' files: where the units look, with the modes the guide gives them.
    etc = root / "etc" / "fedge"
    assert (etc / "client.env").stat().st_mode & 0o777 == 0o600
    assert (etc / "server.key").stat().st_mode & 0o777 == 0o640
    assert (root / "var" / "lib" / "fedge").stat().st_mode & 0o777 == 0o700
    for unit in UNITS.glob("*.service"):  # the page each unit names is where it says
        docs = re.search(r"Documentation=file://(\S+)", unit.read_text())
        assert docs, unit
        assert Path(SYSTEM_PATHS.sub(lambda m: f"{root}{m[1]}", docs[1])).is_file(), docs[1]

    # The units' own commands, as systemd would start them (minus the user switch).
    with contextlib.ExitStack() as stack:
        logs = {}
        for name in ("fedge-server.service", "fedge-client.service"):
            argv, unit_env, cwd = unit_command(name, root)
            assert argv[0] == str(installed / "bin" / "fedge"), argv
            logs[name] = tmp_path / f"{name}.log"
            sink = stack.enter_context(logs[name].open("w"))
            proc = subprocess.Popen(argv, cwd=cwd, env={**env, **unit_env}, stdout=sink,
                                    stderr=subprocess.STDOUT)
            stack.callback(proc.wait)
            stack.callback(proc.kill)
            if name == "fedge-server.service":
                _wait_for(logs[name], "serving task", proc)
        _wait_for(logs["fedge-client.service"], "joined", proc)
        ask = subprocess.run(["fedge", "status", "--server", f"localhost:{port}",
                              "--tls-ca", str(etc / "ca.crt"), "--json"],
                             env={**env, "PATH": f"{root}/usr/local/bin:{env['PATH']}",
                                  "FEDGE_TOKEN": (work / "ops.service-token").read_text()
                                  .strip()}, capture_output=True, text=True, timeout=60)
        assert ask.returncode == 0, ask.stderr
        assert [d["device_id"] for d in json.loads(ask.stdout)["devices"]] == ["cam-1"]


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 120,
              ) -> None:
    end = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < end, f"never said {text!r}:\n{log.read_text()}"
        time.sleep(0.2)
