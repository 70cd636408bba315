"""Buffered asynchronous training (FedBuff) over real gRPC: the pace of the fast devices,
the staleness weight and bound, and the mode's settings."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import grpc
import numpy as np
import pytest

from fedge.config import ServerConfig, SimulateConfig
from fedge.errors import ConfigError
from fedge.protos import fedge_pb2
from fedge.refusals import METADATA_KEY
from fedge.server.app import FedgeServer
from fedge.server.staleness import staleness_weight, step_scale
from tests.faults.rawdevice import RawDevice, digits_weights
from tests.fleet import Fleet


def test_staleness_functions() -> None:
    assert staleness_weight("sqrt", 0) == 1.0
    assert staleness_weight("sqrt", 3) == pytest.approx(0.5)
    assert staleness_weight("polynomial", 3, 1.0) == pytest.approx(0.25)
    assert staleness_weight("constant", 50) == 1.0
    assert staleness_weight("hinge", 2, 2.0) == 1.0
    assert staleness_weight("hinge", 4, 2.0) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        staleness_weight("sqrt", -1)
    assert step_scale(3.0, 4.0) == 0.75 and step_scale(0.0, 0.0) == 1.0


def test_async_settings_refuse_what_the_mode_cannot_run() -> None:
    with pytest.raises(ConfigError, match="secure_aggregation"):
        ServerConfig(mode="async", secure_aggregation=True)
    with pytest.raises(ConfigError, match="dp 'central'"):
        SimulateConfig(mode="async", dp="central")
    with pytest.raises(ConfigError, match="at least 5"):  # krum: 2f+3 per version
        ServerConfig(mode="async", strategy="krum", buffer_size=4)
    ServerConfig(mode="async", strategy="krum", buffer_size=5, insecure=True)


def _version(server: FedgeServer, version: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while server.rounds.model_version < version:
        assert time.monotonic() < end, f"version {version} never committed"
        time.sleep(0.02)


def _submit(device: RawDevice, task: fedge_pb2.Task, arrays: dict[str, np.ndarray]) -> None:
    assert device.submit(device.stream(task, arrays)).accepted


def test_stale_updates_are_weighted_then_refused_past_the_bound(
        make_server: Callable[..., FedgeServer]) -> None:
    server = make_server(mode="async", rounds=10, concurrency=3, buffer_size=1,
                         max_staleness=1, examples_factor=0, norm_factor=0)
    port = server.start()
    a, b, c = (RawDevice(port, f"dev-{k}", server.tokens.create(f"dev-{k}"))
               for k in range(3))
    try:
        for device in (a, b, c):
            device.join()
        w0 = server.rounds.global_model
        ta, tb, tc = a.poll_train(), b.poll_train(), c.poll_train()
        assert (ta.model_version, ta.round) == (0, 1)  # the update names its version
        assert len({ta.train.seed, tb.train.seed, tc.train.seed}) == 3
        wb, wa, wc = digits_weights(1), digits_weights(2), digits_weights(3)
        _submit(b, tb, wb)  # fresh: version 1 is b's model (FedAvg, server lr 1)
        _version(server, 1)
        v1 = server.rounds.global_model
        for name in wb:
            np.testing.assert_allclose(v1[name], wb[name], rtol=0, atol=1e-6)
        _submit(a, ta, wa)  # one version stale: its step is 1/sqrt(2) of the fresh one
        _version(server, 2)
        v2 = server.rounds.global_model
        for name in wa:
            step = (w0[name] - wa[name]) / math.sqrt(2)
            np.testing.assert_allclose(v2[name], v1[name] - step, rtol=0, atol=1e-5)
        # c started from version 0, two behind: refused with its own status and name.
        with pytest.raises(grpc.RpcError) as info:
            c.submit(c.stream(tc, wc))
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert (METADATA_KEY, "too_stale") in (info.value.trailing_metadata() or ())
        assert "2 versions behind" in (info.value.details() or "")
        assert server.rounds.model_version == 2  # nothing was folded
        # The refusal settled c's task: its next poll hands it one from version 2.
        again = c.poll_train()
        assert again.task_id != tc.task_id and again.model_version == 2
    finally:
        for device in (a, b, c):
            device.close()


def test_only_concurrency_devices_train_at_once(make_server: Callable[..., FedgeServer]) -> None:
    server = make_server(mode="async", rounds=5, concurrency=1,
                         buffer_size=1)
    port = server.start()
    a, b = (RawDevice(port, f"dev-{k}", server.tokens.create(f"dev-{k}")) for k in range(2))
    try:
        a.join()
        b.join()
        task = a.poll_train()
        assert b.poll(0.3).kind == fedge_pb2.WAIT  # the one slot is a's
        _submit(a, task, digits_weights(1))
        assert b.poll_train().model_version in (0, 1)  # the slot is free again
    finally:
        a.close()
        b.close()


def test_versions_commit_at_the_pace_of_the_fast_devices(fleet: Fleet) -> None:
    slow_s, versions = 5.0, 6
    dirs = fleet.partitions("digits-mlp", 4)
    server = fleet.server(mode="async", rounds=versions, concurrency=4, buffer_size=2,
                          max_staleness=20, epochs=1, linger_s=10.0)
    port = server.start()
    fast = [fleet.client(port, dirs[k], f"fast-{k}") for k in range(2)]
    slow = [fleet.client(port, dirs[k], f"slow-{k}", train_delay_s=slow_s)
            for k in (2, 3)]
    _version(server, 1, timeout=60)  # the daemons have started (torch loaded, joined)
    started = time.monotonic()
    _version(server, versions, timeout=60)
    elapsed = time.monotonic() - started
    records = server.wait(timeout=60)
    assert [r.round for r in records] == list(range(versions + 1))
    # Synchronous rounds of these four devices would last at least slow_s each.
    assert elapsed < (versions - 1) * slow_s / 2, elapsed
    fleet.join_clients()
    trained_fast = sum(c.stats[0].rounds_trained for c in fast)
    trained_slow = sum(c.stats[0].rounds_trained for c in slow)
    assert trained_fast >= versions and trained_fast >= 2 * trained_slow, (
        trained_fast, trained_slow)
