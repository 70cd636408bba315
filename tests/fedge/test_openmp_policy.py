"""Every entry point sets OpenMP's passive wait policy before torch loads libgomp."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ENTRY_MODULES = ["fedge.cli", "fedge.server.app", "fedge.client.daemon", "fedge.client.trainer",
                 "fedge.simulations.host", "fedge.simulations.runner",
                 "fedge.edge.compiler.artifact"]

PROBE = """
import sys, {module}, torch
names = list(sys.modules)  # insertion order is import order
assert names.index("fedge") < names.index("torch"), "torch was imported before fedge"
import os
print(os.environ["OMP_WAIT_POLICY"])
"""


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_passive_waits_are_set_before_torch_loads(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "PASSIVE"


def test_a_users_own_policy_wins() -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    run = subprocess.run([sys.executable, "-c", "import fedge, os; "
                          "print(os.environ['OMP_WAIT_POLICY'])"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "ACTIVE"
