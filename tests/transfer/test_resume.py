"""A transfer cut at half way resumes from its offset: a real TCP proxy between a daemon
and the server cuts the connection once, in the middle of the model download or of the
update upload, and the round still commits with about one model's bytes moved, not one
and a half (what starting over costs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.wide_task import small
from fedge.simulations.partition import iid, write_partitions
from tests.cutting_proxy import CuttingProxy
from tests.fleet import Fleet

TASK = "bench.wide_task:small"


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_task finds `bench` the way a user finds a task module: from the working directory.
    monkeypatch.chdir(Path(__file__).resolve().parents[2])


def _one_round_through(fleet: Fleet, direction: str) -> tuple[CuttingProxy, int]:
    """One device, one round, its link through a proxy that cuts once at half the
    model's bytes in `direction`; returns the proxy and the model's size."""
    splits = small().load_data()
    data = write_partitions(splits.train_x, splits.train_y,
                            iid(len(splits.train_y), 1, seed=0), fleet.tmp / "data")[0]
    server = fleet.server(task=TASK, rounds=1, min_clients=1, round_timeout_s=60.0,
                          linger_s=1.0, poll_seconds=0.5, norm_factor=0.0)
    port = server.start()
    model_bytes = len(server.rounds.model_blob(0)[0])
    proxy = CuttingProxy(("127.0.0.1", port), direction, cut_after=model_bytes // 2)
    try:
        fleet.client(proxy.port, data, "d1", task=TASK, token=server.tokens.create("d1"))
        records = server.wait(timeout=60)
        fleet.join_clients(timeout=30)
    finally:
        proxy.close()
    assert [r.round for r in records] == [0, 1]
    assert len(proxy.cut_at) == 1, "the proxy never cut the transfer"
    return proxy, model_bytes


def test_a_model_download_cut_at_half_way_resumes_from_its_offset(fleet: Fleet) -> None:
    proxy, model_bytes = _one_round_through(fleet, "down")
    # Starting over would move 1.5 models down; resuming moves one, plus what was in
    # the buffers when the link broke (under 1 MiB of 4).
    assert proxy.passed["down"] < 1.45 * model_bytes, proxy.passed


def test_an_update_upload_cut_at_half_way_resumes_from_its_offset(fleet: Fleet) -> None:
    proxy, model_bytes = _one_round_through(fleet, "up")
    assert proxy.passed["up"] < 1.45 * model_bytes, proxy.passed
    assert fleet.servers[0].service.partials.resumed == 1
    assert len(fleet.servers[0].service.partials) == 0  # taken back, nothing left held
