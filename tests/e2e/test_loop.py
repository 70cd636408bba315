"""The federated loop over real gRPC on 127.0.0.1: a real server, real daemons."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedge.client import daemon as daemon_module
from fedge.protos import fedge_pb2, fedge_pb2_grpc
from fedge.tasks import load_task
from fedge.tasks.training import weights_of
from fedge.tensors import fingerprint, from_blob, specs_to_proto
from tests.fleet import Fleet, free_port


def test_three_clients_train_rounds_over_grpc(fleet: Fleet,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reused: dict[str, list[bool]] = {}  # per device and round: written into the last one's?
    original = daemon_module.download

    def download(session: Any, version: int, **kwargs: Any) -> bytearray:
        blob = original(session, version, **kwargs)  # no reference kept: it must be free
        reused.setdefault(session.device_id, []).append(blob is kwargs.get("into"))
        return blob

    monkeypatch.setattr(daemon_module, "download", download)
    dirs = fleet.partitions("digits-mlp", 3)
    server = fleet.server(rounds=3, min_clients=3)
    port = server.start()
    clients = [fleet.client(port, d, f"dev-{k}") for k, d in enumerate(dirs)]
    records = server.wait(timeout=120)
    fleet.join_clients()

    assert [r.round for r in records] == [0, 1, 2, 3]
    assert all(r.clients == 3 for r in records[1:])
    first, last = records[0].accuracy, records[-1].accuracy
    assert first is not None and last is not None  # round 0 and the last: evaluated
    assert last > 0.85 > first + 0.5
    model_bytes = sum(s.nbytes for s in server.rounds.specs)
    for r in records[1:]:
        assert 3 * model_bytes < r.bytes_up < 3 * model_bytes * 1.05
        assert 3 * model_bytes < r.bytes_down < 3 * model_bytes * 1.05
    for client in clients:
        (stats,) = client.stats
        assert stats.rounds_trained == 3 and stats.stopped_by_server
    # Rounds 2 and 3 downloaded into the buffer of the round before (nothing viewed it).
    assert reused == {f"dev-{k}": [False, True, True] for k in range(3)}
    checkpoints = sorted(p.name for p in (fleet.tmp / "state" / "checkpoints").iterdir())
    assert checkpoints == [f"round-{r:06d}.safetensors" for r in range(4)]
    # The final checkpoint is the model the server evaluated last.
    final, _ = from_blob((fleet.tmp / "state/checkpoints/round-000003.safetensors").read_bytes())
    assert fingerprint(final) == server.rounds.specs


def test_a_client_started_before_its_server_connects_once_it_is_up(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 2)
    port = free_port()
    early = fleet.client(port, dirs[0], "early")
    time.sleep(1.5)  # the daemon is retrying against a closed port meanwhile
    assert early.thread.is_alive() and not early.stats
    server = fleet.server(port=port, rounds=1, min_clients=2)
    server.start()
    fleet.client(port, dirs[1], "on-time")
    records = server.wait(timeout=60)
    fleet.join_clients()
    assert records[-1].round == 1 and records[-1].clients == 2
    assert early.stats[0].rounds_trained == 1


def test_a_restarted_server_resumes_from_its_last_committed_round(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 2)
    first = fleet.server(rounds=2)
    port = first.start()
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}")
    assert first.wait(timeout=60)[-1].round == 2
    fleet.join_clients()
    fleet.clients.clear()

    second = fleet.server(rounds=4)
    port = second.start()
    assert second.rounds.model_version == 2
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}")
    records = second.wait(timeout=60)
    fleet.join_clients()
    assert [r.round for r in records] == [0, 1, 2, 3, 4]
    assert [c.stats[0].rounds_trained for c in fleet.clients] == [2, 2]


@pytest.fixture
def raw(fleet: Fleet) -> tuple[fedge_pb2_grpc.FederationStub, grpc.Channel]:
    """A running server that waits for 5 devices, and a bare stub to poke it with."""
    server = fleet.server(rounds=1, min_clients=5, allow_anonymous=True)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return fedge_pb2_grpc.FederationStub(channel), channel


def _join(stub: fedge_pb2_grpc.FederationStub, device_id: str = "probe",
          task: str = "digits-mlp", specs: list | None = None) -> fedge_pb2.JoinReply:
    if specs is None:
        specs = fingerprint(weights_of(load_task("digits-mlp").build_model()))
    return stub.Join(fedge_pb2.JoinRequest(device_id=device_id, task=task,
                                           fingerprint=specs_to_proto(specs),
                                           num_examples=10), timeout=10)


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), info.value.details() or ""


def test_refusals_carry_a_status_and_a_message(raw: tuple) -> None:
    stub, channel = raw
    code, message = _code(lambda: _join(stub, task="digits-cnn"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "runs task 'digits-mlp'" in message
    specs = fingerprint(weights_of(load_task("digits-cnn").build_model()))
    code, message = _code(lambda: _join(stub, specs=specs))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "does not match" in message
    code, message = _code(lambda: _join(stub, device_id=""))
    assert code is grpc.StatusCode.INVALID_ARGUMENT

    code, message = _code(lambda: stub.PollTask(fedge_pb2.PollRequest(session_id="nope")))
    assert code is grpc.StatusCode.NOT_FOUND and "join again" in message

    session = _join(stub).session_id
    code, message = _code(lambda: stub.SubmitUpdate(iter([fedge_pb2.UpdateChunk(
        tensor=fedge_pb2.TensorChunk(name="0.weight"))])))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "must start with" in message

    header = fedge_pb2.UpdateHeader(session_id=session, task_id="made-up", round=1,
                                    num_examples=10)
    code, message = _code(lambda: stub.SubmitUpdate(iter([fedge_pb2.UpdateChunk(
        header=header)])))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "not open" in message

    gradient = fedge_pb2.UpdateHeader(session_id=session, kind=fedge_pb2.GRADIENT)
    code, message = _code(lambda: stub.SubmitUpdate(iter([fedge_pb2.UpdateChunk(
        header=gradient)])))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "takes weights updates" in message

    code, message = _code(lambda: list(stub.FetchModel(fedge_pb2.FetchRequest(
        session_id=session, model_version=0, offset=10**9))))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "offset" in message
    code, message = _code(lambda: list(stub.FetchModel(fedge_pb2.FetchRequest(
        session_id=session, model_version=7))))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "does not exist" in message
    channel.close()


def test_model_download_resumes_from_any_offset(raw: tuple) -> None:
    stub, channel = raw
    session = _join(stub).session_id

    def fetch(offset: int) -> tuple[bytes, str, int]:
        chunks = list(stub.FetchModel(fedge_pb2.FetchRequest(
            session_id=session, model_version=0, offset=offset)))
        return b"".join(c.data for c in chunks), chunks[0].sha256, chunks[0].total_size

    whole, sha, total = fetch(0)
    assert len(whole) == total
    for offset in (1, 1000, total - 1, total):
        tail, tail_sha, _ = fetch(offset)
        assert whole[:offset] + tail == whole and tail_sha == sha
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="fedge.v1.Federation"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_a_device_revoked_mid_run_is_turned_away_and_says_why(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(rounds=3, min_clients=1)
    port = server.start()
    doomed = fleet.client(port, dirs[0], "doomed")
    deadline = time.monotonic() + 30
    while not server.store.rounds()[1:] and time.monotonic() < deadline:
        time.sleep(0.05)  # wait for the first committed round
    server.tokens.revoke("doomed")
    doomed.thread.join(30)
    assert not doomed.thread.is_alive()
    (error,) = doomed.errors
    assert "UNAUTHENTICATED" in str(error) and "revoked" in str(error)
    fleet.clients.clear()
    server.stop()
