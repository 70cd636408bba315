"""The systemd units: valid for systemd, and their commands valid for fedge."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedge.cli import build_parser

UNITS = Path(__file__).parents[2] / "deploy" / "systemd"
INSTALLED = "/opt/fedge/venv/bin/fedge"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


@pytest.mark.parametrize("name", ["fedge-server.service", "fedge-client.service"])
def test_units_pass_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    # verify also checks that ExecStart exists: point it at this install's fedge.
    fedge = Path(sys.executable).with_name("fedge")
    assert fedge.exists(), fedge
    unit = tmp_path / name
    unit.write_text((UNITS / name).read_text().replace(INSTALLED, str(fedge)))
    run = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr


@pytest.mark.parametrize(("name", "command"), [("fedge-server.service", "server"),
                                               ("fedge-client.service", "client")])
def test_units_run_a_valid_fedge_command_and_are_sandboxed(name: str, command: str) -> None:
    service = _unit(name)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED
    args = build_parser().parse_args(argv[1:])
    assert args.command == command and args.log_format == "json" and args.config
    assert service["Restart"] in ("on-failure", "always")
    assert service["RestartPreventExitStatus"] == "2"  # config errors need a person
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectKernelTunables",
                "RestrictAddressFamilies", "CapabilityBoundingSet", "User"):
        assert key in service, f"{name} lacks {key}"
    if command == "client":  # the token comes from a root-only file, not a command line
        assert service["EnvironmentFile"] == "/etc/fedge/client.env"
        assert "--token" not in argv
        assert "FEDGE_TOKEN=" in (UNITS / "client.env.example").read_text()
