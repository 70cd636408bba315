"""Asking the real ``fedge`` command for DP without the dp-accounting package ends in
one line and exit 2 before anything is made."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.processes import FEDGE


def one_line(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> str:
    """Runs ``fedge argv``; asserts exit 2, no traceback, one line; returns it."""
    run = subprocess.run([*FEDGE, *argv], cwd=cwd, capture_output=True, text=True,
                         timeout=90, env=env)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedge: error: "), run.stderr
    return lines[0]


def test_dp_without_dp_accounting_says_how_to_install_it(tmp_path: Path) -> None:
    # A dp_accounting that cannot be imported, first on the path: as if not installed.
    shadow = tmp_path / "shadow" / "dp_accounting"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    # (fedge server reads the same settings check: tests/server/test_dp.py)
    line = one_line(tmp_path, "simulate", "--dp", "central", "--out", "out", env=env)
    assert "pip install 'fedge[privacy]'" in line, line
    assert not (tmp_path / "out").exists()



def test_central_dp_with_secure_aggregation_is_refused(tmp_path: Path) -> None:
    # The server cannot clip what it cannot see: central DP over masked updates would
    # bound no device's influence. Distributed DP (noise shares before masking) is the way.
    line = one_line(tmp_path, "simulate", "--dp", "central", "--secure-aggregation",
                    "--out", "out")
    assert "--dp distributed with --secure-aggregation" in line, line
    assert not (tmp_path / "out").exists()
