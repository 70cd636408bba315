"""Inference-only devices at the server: they join without a model fingerprint, are
never sampled for TRAIN (nor counted toward min_clients), and show as such in status;
tokens still apply, and a training device still needs its fingerprint."""

from __future__ import annotations

import grpc
import pytest

from fedge.protos import fedge_pb2
from fedge.server.metrics import ServerCollector
from fedge.server.status import from_proto, to_proto
from tests.faults.rawdevice import RawDevice
from tests.fleet import Fleet


def join_inference_only(device: RawDevice) -> str:
    """A Join as `fedge client --inference-only` sends it: no fingerprint."""
    reply = device.stub.Join(fedge_pb2.JoinRequest(
        device_id=device.device_id, task="digits-mlp", num_examples=40, inference_only=True,
        capabilities=fedge_pb2.Capabilities(accelerator="none (inference only)")),
        metadata=device.metadata, timeout=10)
    device.session = reply.session_id
    return device.session


def test_inference_only_devices_join_without_fingerprint_and_never_train(
        fleet: Fleet) -> None:
    server = fleet.server(rounds=1, min_clients=1, fraction=1.0)
    port = server.start()
    viewer = RawDevice(port, "viewer", server.tokens.create("viewer"))
    assert join_inference_only(viewer)
    # Alone it does not make the one device a round needs: no round opens.
    assert viewer.poll(0.3).kind == fedge_pb2.WAIT
    assert server.rounds.progress().selected == 0

    trainer = RawDevice(port, "trainer", server.tokens.create("trainer"))
    trainer.join()
    assert trainer.poll_train().kind == fedge_pb2.TRAIN
    # Every connected device is sampled (fraction 1), yet only the trainer was.
    assert server.rounds.progress().selected == 1
    assert viewer.poll(0.3).kind == fedge_pb2.WAIT

    gauges = {m.name: m.samples[0].value for m in ServerCollector(
        server.rounds, server.registry, server.store, dict).collect() if m.samples}
    assert gauges["fedge_devices_connected"] == 2
    assert gauges["fedge_devices_inference_only"] == 1
    snap = server.status()
    roles = {d["device_id"]: d["inference_only"] for d in snap["devices"]}
    assert roles == {"viewer": True, "trainer": False}
    assert {d["device_id"]: d["inference_only"]
            for d in from_proto(to_proto(snap))["devices"]} == roles
    for device in (viewer, trainer):
        device.channel.close()


def test_joins_without_fingerprint_or_token_are_still_refused(fleet: Fleet) -> None:
    server = fleet.server(rounds=1, min_clients=1)
    port = server.start()
    training = RawDevice(port, "trainer", server.tokens.create("trainer"))
    with pytest.raises(grpc.RpcError) as refused:
        training.stub.Join(fedge_pb2.JoinRequest(device_id="trainer", task="digits-mlp",
                                                 num_examples=40),
                           metadata=training.metadata, timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "does not match task" in (refused.value.details() or "")

    anonymous = RawDevice(port, "viewer", None)
    with pytest.raises(grpc.RpcError) as no_token:
        join_inference_only(anonymous)
    assert no_token.value.code() is grpc.StatusCode.UNAUTHENTICATED
    wrong_task = RawDevice(port, "viewer", server.tokens.create("viewer"))
    with pytest.raises(grpc.RpcError) as other_task:
        wrong_task.stub.Join(fedge_pb2.JoinRequest(device_id="viewer", task="digits-cnn",
                                                   inference_only=True),
                             metadata=wrong_task.metadata, timeout=10)
    assert other_task.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    for device in (training, anonymous, wrong_task):
        device.channel.close()
