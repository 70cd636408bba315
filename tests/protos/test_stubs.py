"""The committed stubs load and round-trip on every protobuf line fedge accepts.

The CI runs one line (the dev install's). The other is checked by hand, in two venvs
(see docs/coming-from-flower.md, "Two protobuf lines"): it needs nothing but protobuf,
grpcio and pytest, hence ``--noconftest``:

    pip install protobuf==5.28.1 grpcio==1.68.1 pytest   # or: 'protobuf>=7' 'grpcio>=1.85'
    PYTHONPATH=$PWD pytest --noconftest -p no:cacheprovider tests/protos/test_stubs.py
"""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import runtime_version

from fedge.protos import fedge_pb2 as pb
from fedge.protos import fedge_pb2_grpc as pb_grpc


def test_the_gencode_is_not_newer_than_the_oldest_runtime_we_accept() -> None:
    # The floor in pyproject (protobuf>=5.28.1) is the gencode's version: a newer gencode
    # would make every protobuf 5 runtime refuse to import the stubs.
    text = Path(pb.__file__).read_text()
    assert "Protobuf Python Version: 5.28.1" in text
    assert runtime_version.MAJOR >= 5


def test_messages_round_trip_with_every_kind_of_field() -> None:
    header = pb.UpdateHeader(
        session_id="s", task_id="t", round=3, kind=pb.DELTA, encoding=pb.INT8,
        num_examples=17, metrics={"loss": 0.25, "accuracy": 0.5}, num_tensors=2, sha256="ab",
    )
    chunk = pb.TensorChunk(name="w", dtype="float32", shape=[2, 3], offset=8, data=b"\x00\x01")
    for message in (pb.UpdateChunk(header=header), pb.UpdateChunk(tensor=chunk)):
        back = pb.UpdateChunk.FromString(message.SerializeToString())
        assert back == message
        assert back.WhichOneof("payload") == message.WhichOneof("payload")
    assert not chunk.HasField("crc32")  # proto3 optional keeps presence
    chunk.crc32 = 0
    assert pb.TensorChunk.FromString(chunk.SerializeToString()).HasField("crc32")
    join = pb.JoinRequest(
        device_id="d", task="digits-mlp", num_examples=5, inference_only=True,
        fingerprint=[pb.TensorSpec(name="w", dtype="float32", shape=[4])],
        capabilities=pb.Capabilities(accelerator="cpu", memory_bytes=1 << 30),
    )
    assert pb.JoinRequest.FromString(join.SerializeToString()) == join
    task = pb.Task(kind=pb.TRAIN, train=pb.TrainConfig(epochs=1, lr=0.1, topk_fraction=0.01))
    assert pb.Task.FromString(task.SerializeToString()).train.topk_fraction == 0.01
    assert pb.TaskKind.Name(pb.DEPLOY) == "DEPLOY"


class _Status(pb_grpc.FederationServicer):
    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        rounds = [pb.RoundSummary(round=r, accuracy=0.9) for r in range(request.last_rounds)]
        return pb.StatusReply(task="t", rounds=rounds, refusals={"Join/UNAUTHENTICATED": 2})


def test_the_grpc_stubs_call_a_real_server() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    pb_grpc.add_FederationServicer_to_server(_Status(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.FederationStub(channel).Status(pb.StatusRequest(last_rounds=3))
        assert [r.round for r in reply.rounds] == [0, 1, 2]
        assert dict(reply.refusals) == {"Join/UNAUTHENTICATED": 2}
    finally:
        server.stop(None)
