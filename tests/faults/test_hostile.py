"""Hostile devices beside honest ones: every kind of bad input is refused with its own
status and message, counted, and the honest devices' round aggregates exactly as if the
hostile devices were not there. A refusal of an update's content settles its task (the
task takes nothing more), so each such kind is sent by a hostile device of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedge.config import ServerConfig
from fedge.protos import fedge_pb2
from fedge.server.app import FedgeServer
from fedge.tensors import from_blob
from tests.faults.rawdevice import Arrays, RawDevice, digits_specs, refusal
from tests.fleet import Fleet

Code = grpc.StatusCode
NORM_BOUND = 50.0
# The kinds of bad update content, each sent by a device of its own (see above).
SETTLING = ("wrong shape", "wrong dtype", "NaN", "Inf", "norm bomb", "truncated stream",
            "bad chunk checksum", "damaged chunk without checksum", "stream digest mismatch",
            "oversize chunk", "unknown tensor", "zero examples", "example count bomb",
            "oversize message")
DEVICES = 3 + len(SETTLING)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FedgeServer]:
    # Every device is sampled; two updates (the honest ones) commit a round.
    server = FedgeServer(ServerConfig(
        host="127.0.0.1", port=0, rounds=2, min_clients=DEVICES, quorum_fraction=0.1,
        round_timeout_s=60.0, poll_seconds=2.0, state_dir=str(tmp_path / "state"),
        insecure=True, edge=False, max_update_norm=NORM_BOUND, max_examples=10_000,
        linger_s=1.0,
        # The round's aggregate is checked to be the exact FedAvg of the declared counts,
        # which the fleet-relative bounds (tested in test_poisoning.py) would cap.
        examples_factor=0.0, norm_factor=0.0))
    yield server
    server.shutdown(grace=0.1)


def honest_update(device: RawDevice, task: fedge_pb2.Task, seed: int) -> Arrays:
    """The global model of the task plus small noise: a plausible trained model."""
    arrays, _ = from_blob(device.fetch(task.model_version))
    rng = np.random.default_rng(seed)
    return {n: (a + rng.normal(0, 0.01, a.shape)).astype(np.float32)
            for n, a in arrays.items()}


def test_every_kind_of_hostile_input_is_refused_and_the_round_is_unharmed(
        server: FedgeServer) -> None:
    port = server.start()
    names = {kind: f"hostile-{k}" for k, kind in enumerate(SETTLING)}
    tokens = {d: server.tokens.create(d) for d in ("honest-a", "honest-b", "hostile", "ghost",
                                                     *names.values())}
    server.tokens.revoke("ghost")
    a = RawDevice(port, "honest-a", tokens["honest-a"])
    b = RawDevice(port, "honest-b", tokens["honest-b"])
    evil = RawDevice(port, "hostile", tokens["hostile"])
    gang = {kind: RawDevice(port, name, tokens[name]) for kind, name in names.items()}
    seen: list[tuple[str, Code, str]] = []

    def refused(kind: str, expected: Code, call: object, text: str = "") -> None:
        code, message = refusal(call)  # type: ignore[arg-type]
        assert code is expected, f"{kind}: {code.name}: {message}"
        assert text.lower() in message.lower(), f"{kind}: {message!r} lacks {text!r}"
        seen.append((kind, code, message))

    # ---- identity, before any session exists
    anon = RawDevice(port, "hostile", None)
    refused("no token", Code.UNAUTHENTICATED, anon.join, "no device token")
    forged = RawDevice(port, "hostile", "fdg_" + "A" * 43)
    refused("unknown token", Code.UNAUTHENTICATED, forged.join, "unknown device token")
    malformed = RawDevice(port, "hostile", "let-me-in")
    refused("malformed token", Code.UNAUTHENTICATED, malformed.join, "not a fedge")
    ghost = RawDevice(port, "ghost", tokens["ghost"])
    refused("revoked token", Code.UNAUTHENTICATED, ghost.join, "revoked")
    refused("another device's identity", Code.PERMISSION_DENIED,
            lambda: evil.join(device_id="honest-a"), "belongs to device 'hostile'")
    wrong = [s if s.name != "0.weight" else type(s)(s.name, s.dtype, (32, 64))
             for s in digits_specs()]
    refused("wrong fingerprint", Code.INVALID_ARGUMENT, lambda: evil.join(specs=wrong),
            "does not match")
    refused("wrong task", Code.INVALID_ARGUMENT, lambda: evil.join(task="digits-cnn"),
            "runs task")

    # ---- round 1: everyone behaves, so the hostile device has an update to replay
    everyone = (a, b, evil, *gang.values())
    for device in everyone:
        device.join()
    refused("device id in use", Code.ALREADY_EXISTS,
            lambda: RawDevice(port, "hostile", tokens["hostile"]).join(), "in use")
    first = {d.device_id: d.poll_train() for d in everyone}
    replayable = None
    for seed, device in enumerate(everyone):
        stream = device.stream(first[device.device_id],
                               honest_update(device, first[device.device_id], seed))
        assert device.submit(stream).accepted
        if device is evil:
            replayable = stream
    assert replayable is not None

    # ---- round 2: honest updates, and every hostile variant beside them
    tasks = {d.device_id: d.poll_train() for d in everyone}
    assert all(t.round == 2 for t in tasks.values())
    t = tasks["hostile"]
    good = honest_update(evil, t, 99)
    tensors = sorted(good)

    def submit(edit: object = None, arrays: Arrays | None = None, by: str = "",
               **header: object) -> object:
        """A call sending good (or arrays) edited, by the hostile device or gang[by]."""
        device = gang[by] if by else evil
        task = tasks[device.device_id]
        return lambda: device.submit(device.stream(task, good if arrays is None else arrays,
                                                   edit, **header))  # type: ignore[arg-type]

    def reshaped(chunks: list[fedge_pb2.TensorChunk]) -> None:
        chunks[0].shape[:] = [chunks[0].shape[0] + 1, *chunks[0].shape[1:]]

    def flipped(chunks: list[fedge_pb2.TensorChunk]) -> None:
        data = bytearray(chunks[-1].data)
        data[3] ^= 0xFF
        chunks[-1].data = bytes(data)  # its crc32 still describes the original

    def uncrc_flipped(chunks: list[fedge_pb2.TensorChunk]) -> None:
        # Damaged, without a CRC-32 (as this server lets a device send it): the
        # stream's SHA-256 is then the only check left, and it must refuse the chunk.
        chunks[1].ClearField("crc32")
        data = bytearray(chunks[1].data)
        data[0] ^= 0x01
        chunks[1].data = bytes(data)

    def truncated(chunks: list[fedge_pb2.TensorChunk]) -> None:
        del chunks[-1]

    def garbage(chunks: list[fedge_pb2.TensorChunk]) -> None:
        import zlib

        chunks[0].data = b"garbage"
        chunks[0].crc32 = zlib.crc32(chunks[0].data)

    def renamed(chunks: list[fedge_pb2.TensorChunk]) -> None:
        chunks[0].name = "backdoor.weight"

    def oversized(chunks: list[fedge_pb2.TensorChunk]) -> None:
        chunks[0].data = bytes(5 << 20)  # past the 4 MiB gRPC message cap

    def big_chunk(chunks: list[fedge_pb2.TensorChunk]) -> None:
        import zlib

        chunks[0].data = bytes(2 << 20)  # under gRPC's cap, over our 1 MiB chunks
        chunks[0].crc32 = zlib.crc32(chunks[0].data)

    nan = {n: a.copy() for n, a in good.items()}
    nan[tensors[0]].flat[0] = np.nan
    inf = {n: a.copy() for n, a in good.items()}
    inf[tensors[-1]].flat[-1] = np.inf
    bomb = {n: a + 10.0 for n, a in good.items()}
    doubles = {n: a.astype(np.float64) for n, a in good.items()}

    # Refusals about the request, not the update: the task stays open.
    refused("replayed update", Code.FAILED_PRECONDITION, lambda: evil.submit(replayable),
            "round 1 is not this device's open task")
    refused("stale round", Code.FAILED_PRECONDITION, submit(round=1), "of round 1")
    refused("wrong task id", Code.FAILED_PRECONDITION, submit(task_id="made-up"), "made-up")
    refused("no stream digest", Code.INVALID_ARGUMENT, submit(sha256=""), "must carry")
    refused("no header", Code.INVALID_ARGUMENT,
            lambda: evil.submit(evil.stream(t, good)[1:]), "must start with")
    refused("unknown update kind", Code.INVALID_ARGUMENT, submit(kind=42), "unknown value 42")
    refused("another run's update kind", Code.INVALID_ARGUMENT,
            submit(kind=fedge_pb2.DELTA), "sent DELTA")
    refused("another run's encoding", Code.INVALID_ARGUMENT,
            submit(encoding=fedge_pb2.INT8), "sent INT8")
    refused("unknown session", Code.NOT_FOUND,
            lambda: evil.stub.PollTask(fedge_pb2.PollRequest(session_id="nope"),
                                       metadata=evil.metadata), "join again")
    refused("session hijack", Code.PERMISSION_DENIED,
            lambda: evil.stub.PollTask(fedge_pb2.PollRequest(session_id=a.session),
                                       metadata=evil.metadata), "not to the device")
    refused("fetch past the end", Code.INVALID_ARGUMENT, lambda: evil.fetch(1, 10**9),
            "outside")
    refused("fetch a future model", Code.FAILED_PRECONDITION, lambda: evil.fetch(7),
            "does not exist")

    # Refusals of an update's content, one device each: each settles that device's task.
    refused("wrong shape", Code.INVALID_ARGUMENT, submit(reshaped, by="wrong shape"),
            "does not match")
    refused("wrong dtype", Code.INVALID_ARGUMENT, submit(arrays=doubles, by="wrong dtype"),
            "float64")
    refused("NaN", Code.INVALID_ARGUMENT, submit(arrays=nan, by="NaN"), "NaN")
    refused("Inf", Code.INVALID_ARGUMENT, submit(arrays=inf, by="Inf"), "infinite")
    refused("norm bomb", Code.INVALID_ARGUMENT, submit(arrays=bomb, by="norm bomb"),
            "exceeds the bound")
    refused("truncated stream", Code.INVALID_ARGUMENT, submit(truncated, by="truncated stream"),
            "incomplete")
    refused("bad chunk checksum", Code.DATA_LOSS, submit(flipped, by="bad chunk checksum"),
            "CRC-32")
    refused("damaged chunk without checksum", Code.DATA_LOSS,
            submit(uncrc_flipped, by="damaged chunk without checksum"), "SHA-256")
    refused("stream digest mismatch", Code.DATA_LOSS,
            submit(sha256="0" * 64, by="stream digest mismatch"), "SHA-256")
    refused("oversize chunk", Code.RESOURCE_EXHAUSTED, submit(big_chunk, by="oversize chunk"),
            "chunk limit")
    refused("unknown tensor", Code.INVALID_ARGUMENT, submit(renamed, by="unknown tensor"),
            "unexpected tensor")
    refused("zero examples", Code.INVALID_ARGUMENT, submit(num_examples=0, by="zero examples"),
            "got 0")
    refused("example count bomb", Code.INVALID_ARGUMENT,
            submit(num_examples=10**12, by="example count bomb"), "num_examples")
    # gRPC itself refuses a message over its cap; whether our handler also sees the cut
    # stream (and settles the task) depends on timing, so the device then sends garbage:
    # refused as such, or as already settled.
    refused("oversize message", Code.RESOURCE_EXHAUSTED,
            submit(oversized, by="oversize message"), "larger than")
    code, message = refusal(submit(garbage, by="oversize message"))  # type: ignore[arg-type]
    assert (code, "settled") == (Code.ALREADY_EXISTS, "settled") or (
        code is Code.INVALID_ARGUMENT and "whole float32" in message), (code, message)
    # The hostile device's own task: settled by garbage, it then takes nothing, not even
    # a good update.
    refused("garbage bytes", Code.INVALID_ARGUMENT, submit(garbage), "whole float32")
    refused("a good update after a refused one", Code.ALREADY_EXISTS, submit(),
            "refused")

    # Honest devices: A's update, resent once (idempotent), then B's.
    updates = {"honest-a": honest_update(a, tasks["honest-a"], 1),
               "honest-b": honest_update(b, tasks["honest-b"], 2)}
    examples = {"honest-a": 100, "honest-b": 300}
    stream_a = a.stream(tasks["honest-a"], updates["honest-a"])
    assert a.submit(stream_a).message == "update accepted"
    assert "already accepted" in a.submit(stream_a).message
    other = {n: v + 0.001 for n, v in updates["honest-a"].items()}
    refused("a second, different update", Code.ALREADY_EXISTS,
            lambda: a.submit(a.stream(tasks["honest-a"], other)), "different update")
    assert b.submit(b.stream(tasks["honest-b"], updates["honest-b"],
                             num_examples=examples["honest-b"])).accepted

    records = server.wait(timeout=60)
    # Every sampled device sent its update or had it refused: the round closed then,
    # not at its 60 s deadline.
    assert records[2].seconds < 50, records[2]
    assert [r.round for r in records] == [0, 1, 2]
    assert records[2].clients == 2
    committed, _ = from_blob(server.store.checkpoint_path(2).read_bytes())
    for name in tensors:
        expected = (0.25 * updates["honest-a"][name].astype(np.float64)
                    + 0.75 * updates["honest-b"][name])
        np.testing.assert_allclose(committed[name], expected, rtol=1e-5, atol=1e-6)

    kinds = [k for k, _, _ in seen]
    assert len(kinds) >= 30, kinds
    # A chunk damaged without a CRC-32 and a header with a wrong digest are one refusal
    # by design: the server cannot tell which side of the SHA-256 is wrong.
    messages = [m for k, _, m in seen if k != "damaged chunk without checksum"]
    assert len(set(messages)) == len(messages), "two kinds of refusal share a message"
    # Every refusal is counted by method and status. gRPC itself refuses the oversize
    # message; whether our handler also sees the cut stream depends on timing. (The
    # garbage sent after it is counted too.)
    assert len(seen) <= sum(server.service.refusals.values()) <= len(seen) + 1
    assert server.service.refusals[("SubmitUpdate", "RESOURCE_EXHAUSTED")] == 1
    assert server.service.refusals[("SubmitUpdate", "DATA_LOSS")] == 3
    for device in (*everyone, anon, forged, malformed, ghost):
        device.close()



def test_a_round_whose_every_update_is_refused_stops_the_run_not_loops(fleet: Fleet) -> None:
    """Every update over the norm bound is refused (as a diverged model's NaNs would
    be): each attempt at the round closes as soon as both refusals are in, not at its
    60 s deadline; after max_round_attempts the run stops, saying why, and the devices,
    which logged each refusal and kept serving, are told so and exit cleanly."""
    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(rounds=3, max_update_norm=1e-6, round_timeout_s=60.0,
                          retry_backoff_s=0.1, max_round_attempts=3)
    port = server.start()
    clients = [fleet.client(port, d, f"dev-{k}") for k, d in enumerate(dirs)]
    started = time.monotonic()
    records = server.wait(timeout=50)
    fleet.join_clients()
    assert time.monotonic() - started < 50  # never waited out a deadline
    assert [r.round for r in records] == [0]
    assert server.rounds.failure.startswith("round 1 missed its quorum 3 times in a row")
    assert "exceeds the bound" in server.rounds.failure
    for client in clients:
        (stats,) = client.stats
        assert stats.updates_refused == 3 and stats.rounds_trained == 0
        assert stats.stopped_by_server
