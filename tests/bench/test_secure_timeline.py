"""bench.secure_timeline on the processes backend: the device hooks run inside the client
host processes the simulation starts, and their events reach the server's timeline.
No timing is asserted: the bench measures, the test checks its plumbing."""

from __future__ import annotations

import os

import pytest

from bench import secure_timeline


@pytest.mark.slow
def test_processes_timeline_has_every_device_phase_from_the_hosts():
    before = {k: os.environ.get(k) for k in ("PYTHONPATH", "FEDGE_BENCH_TIMELINE")}
    result = secure_timeline.run(3, True, "digits-mlp", "processes")
    phases = result["summary"]["phases"]
    # Logged in the hosts, not in this process: one per device.
    assert phases["train handler"]["n"] == 3 and phases["compute share"]["n"] == 3
    assert phases["masked upload"]["n"] == 3 and phases["quantize"]["n"] == 3
    assert {e["host"] for e in result["events"] if "host" in e} - {os.getpid()}
    # Server side, in this process: every stage opened, closed after its last arrival.
    stages = result["summary"]["stages"]
    assert [s["stage"] for s in stages] == ["share keys", "masked input", "unmasking"]
    assert all(s["closed"] >= s["last_arrival"] for s in stages)
    # The hosts' CPU is counted at the stage marks.
    assert sum(kinds.get("C host processes", 0.0)
               for kinds in result["cpu_by_stage"].values()) > 0
    # Nothing of the bench's environment is left behind.
    assert {k: os.environ.get(k) for k in before} == before
