"""An edge artifact is handed to a device again until the device reports it installed
or refused: a download that broke does not mean the device never gets it."""

from __future__ import annotations

import pytest

from fedge.protos import fedge_pb2
from fedge.server.deploy import MAX_OFFERS
from tests.faults.rawdevice import RawDevice, digits_weights
from tests.fleet import Fleet

pytestmark = pytest.mark.slow


def _poll_until(device: RawDevice, kind: int, tries: int = 30) -> fedge_pb2.Task:
    for _ in range(tries):
        task = device.poll(2.0)
        if task.kind == kind:
            return task
    raise AssertionError(f"{device.device_id} was never handed a {kind} task")


def test_an_artifact_is_offered_again_until_the_device_reports_it(fleet: Fleet) -> None:
    server = fleet.server(rounds=1, min_clients=2, fraction=1.0, edge=True, linger_s=30.0)
    port = server.start()
    devices = [RawDevice(port, name, server.tokens.create(name)) for name in ("a", "b")]
    try:
        for device in devices:
            device.join()
        for device in devices:
            device.submit(device.stream(device.poll_train(), digits_weights()))
        a, b = devices
        offered = _poll_until(a, fedge_pb2.DEPLOY)
        # a's download broke before it could fetch: it polls again and is offered it again.
        again = a.poll(2.0)
        assert again.kind == fedge_pb2.DEPLOY
        assert again.artifact_sha256 == offered.artifact_sha256
        chunks = a.stub.FetchModel(fedge_pb2.FetchRequest(
            session_id=a.session, model_version=again.model_version, artifact=True),
            metadata=a.metadata, timeout=30)
        assert b"".join(c.data for c in chunks)
        a.stub.ReportMetrics(fedge_pb2.MetricsReport(
            session_id=a.session, round=again.model_version,
            model_version=again.model_version, metrics={"edge_installed": 1.0}),
            metadata=a.metadata, timeout=10)
        assert a.poll(2.0).kind == fedge_pb2.STOP  # reported: never offered again

        # b refuses it: told once, then STOP.
        refused = _poll_until(b, fedge_pb2.DEPLOY)
        b.stub.ReportMetrics(fedge_pb2.MetricsReport(
            session_id=b.session, round=refused.model_version,
            model_version=refused.model_version, metrics={"edge_refused": 1.0}),
            metadata=b.metadata, timeout=10)
        assert b.poll(2.0).kind == fedge_pb2.STOP
        server.wait(timeout=30)
    finally:
        for device in devices:
            device.close()


def test_a_device_that_never_reports_is_offered_the_artifact_a_bounded_number_of_times(
        fleet: Fleet) -> None:
    server = fleet.server(rounds=1, min_clients=1, fraction=1.0, edge=True, linger_s=30.0)
    port = server.start()
    device = RawDevice(port, "mute", server.tokens.create("mute"))
    try:
        device.join()
        device.submit(device.stream(device.poll_train(), digits_weights()))
        _poll_until(device, fedge_pb2.DEPLOY)
        kinds = [device.poll(2.0).kind for _ in range(MAX_OFFERS)]
        assert kinds == [fedge_pb2.DEPLOY] * (MAX_OFFERS - 1) + [fedge_pb2.STOP]
        server.wait(timeout=30)
    finally:
        device.close()
