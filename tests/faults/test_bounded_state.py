"""What a device sends is bounded before it is stored, shown or logged: capability
strings, ids, metrics (finite, few), rounds and model versions that exist. Each case
failed on the code before issue 20: a 4 MiB capability string broke every Status call,
NaN metrics returned UNKNOWN with a traceback (and the update was still folded), rounds
of 2^62 and edge reports for models that never existed were stored, an id with a
trailing newline joined, and refusals echoed a 1.3M-character id whole."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedge.logs import TextFormatter
from fedge.protos import fedge_pb2
from fedge.refusals import MESSAGE_CHARS, METADATA_KEY
from fedge.server.app import FedgeServer
from fedge.tensors import specs_to_proto
from tests.faults.rawdevice import RawDevice, digits_specs, digits_weights, refusal

Code = grpc.StatusCode
FORGED = "round 99 evaluated: accuracy 1.0000"


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """The server's log as `fedge server` writes it (text format), captured."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(old_level)


def join(device: RawDevice, device_id: str | None = None, inference_only: bool = False,
         **caps: object) -> fedge_pb2.JoinReply:
    request = fedge_pb2.JoinRequest(
        device_id=device.device_id if device_id is None else device_id, task="digits-mlp",
        fingerprint=specs_to_proto(digits_specs()), num_examples=100,
        inference_only=inference_only,
        capabilities=fedge_pb2.Capabilities(**caps))  # type: ignore[arg-type]
    reply = device.stub.Join(request, metadata=device.metadata, timeout=30)
    device.session = reply.session_id
    return reply


def refused_as(call: Callable[[], object], code: Code, text: str) -> str:
    status, message = refusal(call)
    assert status is code, (status, message)
    assert text in message, message
    assert len(message) <= MESSAGE_CHARS + 20, len(message)
    return message


def status(server: FedgeServer, token: str) -> fedge_pb2.StatusReply:
    operator = RawDevice(server.port, "ops", token)
    try:
        return operator.stub.Status(fedge_pb2.StatusRequest(last_rounds=5),
                                    metadata=operator.metadata, timeout=10)
    finally:
        operator.close()


def test_strings_and_ids_are_bounded_and_cannot_forge_log_lines(
        make_server: Callable[..., FedgeServer], text_log: io.StringIO,
        tmp_path: Path) -> None:
    server = make_server(rate_limit=0)
    port = server.start()
    ops = server.tokens.create("ops", role="operator")
    evil = RawDevice(port, "evil", server.tokens.create("evil"))
    refused_as(lambda: join(evil, platform="x" * ((4 << 20) - 4096)), Code.INVALID_ARGUMENT,
               "over the limit of")
    forged = f"Linux\r\n2026-01-01 00:00:00,000 INFO fedge.server.driver [round.committed] " \
             f"{FORGED}"
    refused_as(lambda: join(evil, accelerator=forged), Code.INVALID_ARGUMENT,
               "control characters")
    refused_as(lambda: join(evil, runtime="\x1b[2J"), Code.INVALID_ARGUMENT,
               "control characters")
    join(evil, platform="p" * 256, accelerator="a" * 256, runtime="r" * 256)
    reply = status(server, ops)  # the 4 MiB string never got in: Status works
    assert [d.device_id for d in reply.devices] == ["evil"]
    assert reply.ByteSize() < 4096

    anonymous = make_server(allow_anonymous=True, rate_limit=0,
                            state_dir=str(tmp_path / "anon"))
    anon = RawDevice(anonymous.start(), "dev-1", None)
    refused_as(lambda: join(anon, "dev-1\n"), Code.INVALID_ARGUMENT, "must be 1-128")
    huge = refused_as(lambda: join(anon, "a" * 1_300_000), Code.INVALID_ARGUMENT,
                      "(1300000 characters)")
    assert len(huge) < 400, huge
    join(anon)

    log = text_log.getvalue()
    assert len(log) < 20_000, len(log)  # no id or string was written whole
    for line in log.splitlines():
        assert FORGED not in line or "refused" in line, line  # quoted, never a line
        assert not line.startswith("2026-01-01"), line
    assert "Traceback" not in log
    evil.close()
    anon.close()


def test_metrics_must_be_finite_few_and_about_things_that_exist(
        make_server: Callable[..., FedgeServer], text_log: io.StringIO) -> None:
    server = make_server(rate_limit=0, min_clients=1, rounds=1, edge=False)
    port = server.start()
    device = RawDevice(port, "dev", server.tokens.create("dev"))
    device.join()
    task = device.poll_train()

    def report(**fields: object) -> Callable[[], object]:
        message = fedge_pb2.MetricsReport(session_id=device.session,
                                          **fields)  # type: ignore[arg-type]
        return lambda: device.stub.ReportMetrics(message, metadata=device.metadata,
                                                 timeout=10)

    def submit(**header: object) -> Callable[[], object]:
        stream = device.stream(task, digits_weights(), None, **header)
        return lambda: device.submit(stream)

    refused_as(report(round=0, metrics={"edge_accuracy": float("nan")}),
               Code.INVALID_ARGUMENT, "must be finite")
    refused_as(report(round=0, metrics={f"k{i}": 1.0 for i in range(100_000)}),
               Code.INVALID_ARGUMENT, "100000 metrics, over the limit")
    refused_as(report(round=1 << 62, metrics={"x": 1.0}), Code.INVALID_ARGUMENT, "round")
    refused_as(report(round=0, model_version=7, metrics={"edge_installed": 1.0}),
               Code.INVALID_ARGUMENT, "model_version")
    refused_as(report(round=0, model_version=0, metrics={"edge_installed": 1.0}),
               Code.FAILED_PRECONDITION, "no edge artifact")
    device.stub.ReportMetrics(fedge_pb2.MetricsReport(
        session_id=device.session, round=1, metrics={"battery": 0.5}),
        metadata=device.metadata, timeout=10)  # a sane report is stored

    refused_as(submit(metrics={"train_loss": float("nan")}), Code.INVALID_ARGUMENT,
               "must be finite")
    refused_as(submit(round=1 << 62), Code.INVALID_ARGUMENT, "round")
    assert server.rounds.totals.updates_accepted == 0  # nothing of them was folded
    assert device.submit(device.stream(task, digits_weights(),
                                       metrics={"train_loss": 0.5})).accepted
    assert server.store.metric_values(1, "device", "battery") == {"dev": 0.5}
    assert server.store.metric_values(1, "train", "train_loss") == {"dev": 0.5}
    records = server.wait(timeout=60)
    assert [r.round for r in records] == [0, 1]
    assert server.service.refusals[("ReportMetrics", "INVALID_ARGUMENT")] == 4
    assert "Traceback" not in text_log.getvalue()
    device.close()


def test_a_device_told_stop_is_not_live_and_status_is_bounded(
        make_server: Callable[..., FedgeServer]) -> None:
    # (150 anonymous devices from one address: over the Sybil cap, lifted here.)
    server = make_server(allow_anonymous=True, rate_limit=0, min_clients=1, rounds=1,
                         edge=False, anonymous_per_address=1000)
    port = server.start()
    worker = RawDevice(port, "worker", None)
    join(worker)
    task = worker.poll_train()
    assert worker.submit(worker.stream(task, digits_weights())).accepted
    assert any(worker.poll(2.0).kind == fedge_pb2.STOP for _ in range(10))
    (listed,) = server.status()["devices"]
    assert not listed["live"], listed  # it was told STOP: its daemon has exited
    crowd = RawDevice(port, "crowd", None)
    for k in range(150):
        join(crowd, f"crowd-{k}", inference_only=True, platform="p" * 256)
    snap = server.status()
    assert (snap["devices_total"], snap["devices_live"]) == (151, 150)
    assert len(snap["devices"]) == 100 and all(d["live"] for d in snap["devices"])
    crowd.close()
    worker.close()


def test_the_refusal_name_of_an_over_limit_field_is_sent(
        make_server: Callable[..., FedgeServer]) -> None:
    server = make_server(allow_anonymous=True, rate_limit=0)
    device = RawDevice(server.start(), "dev", None)
    with pytest.raises(grpc.RpcError) as info:
        join(device, platform="\n")
    call: Any = info.value  # a grpc.Call as well as an RpcError
    names = [value for key, value in call.trailing_metadata() or () if key == METADATA_KEY]
    assert names == ["over_limit"]
    device.close()


def test_devices_that_left_or_went_silent_expire() -> None:
    from fedge.server import registry as registry_module
    from fedge.server.registry import Registry

    registry = Registry(device_timeout_s=0.05)
    gone = registry.join("gone", 10, {})
    stopped = registry.join("stopped", 10, {})
    registry.leave(stopped.session_id)
    assert [d.device_id for d in registry.live()] == ["gone"]
    time.sleep(max(registry_module.SWEEP_S, 0.05 * registry_module.EXPIRE_TIMEOUTS) + 0.1)
    registry.join("new", 10, {})
    assert [d.device_id for d in registry.all()] == ["new"]
    with pytest.raises(Exception, match="join again"):
        registry.get(gone.session_id)
