"""A bare device that speaks the wire protocol by hand, so tests can send exactly the
bytes a broken or hostile device would."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from fedge.protos import fedge_pb2, fedge_pb2_grpc
from fedge.tasks import load_task
from fedge.tasks.training import weights_of
from fedge.tensors import Spec, fingerprint, iter_chunks, specs_to_proto, stream_sha256

Arrays = dict[str, np.ndarray]


def digits_weights(seed: int = 0) -> Arrays:
    import torch

    torch.manual_seed(seed)
    return weights_of(load_task("digits-mlp").build_model())


def digits_specs() -> list[Spec]:
    return fingerprint(digits_weights())


@dataclass
class RawDevice:
    """One device's channel, token and session, driven call by call."""

    port: int
    device_id: str
    token: str | None
    session: str = ""
    own_connection: bool = False  # True: never share a TCP connection with other devices
    advert: fedge_pb2.SecureAdvert | None = None  # what its polls carry (secure runs)
    channel: grpc.Channel = field(init=False)
    stub: fedge_pb2_grpc.FederationStub = field(init=False)

    def __post_init__(self) -> None:
        # gRPC shares connections between channels to the same target unless told not to.
        options = [("grpc.use_local_subchannel_pool", 1)] if self.own_connection else []
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=options)
        self.stub = fedge_pb2_grpc.FederationStub(self.channel)

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [] if self.token is None else [("authorization", f"Bearer {self.token}")]

    def join(self, device_id: str | None = None, task: str = "digits-mlp",
             specs: list[Spec] | None = None, previous: str = "") -> str:
        request = fedge_pb2.JoinRequest(
            device_id=self.device_id if device_id is None else device_id, task=task,
            fingerprint=specs_to_proto(specs or digits_specs()), num_examples=100,
            previous_session=previous)
        reply = self.stub.Join(request, metadata=self.metadata, timeout=10)
        self.session = reply.session_id
        return self.session

    def poll(self, wait: float = 10.0) -> fedge_pb2.Task:
        return self.stub.PollTask(fedge_pb2.PollRequest(session_id=self.session,
                                                        wait_seconds=wait, advert=self.advert),
                                  metadata=self.metadata, timeout=wait + 10)

    def poll_train(self, tries: int = 20) -> fedge_pb2.Task:
        for _ in range(tries):
            task = self.poll(2.0)
            if task.kind == fedge_pb2.TRAIN:
                return task
        raise AssertionError(f"{self.device_id} was never handed a TRAIN task")

    def header(self, task: fedge_pb2.Task, arrays: Arrays, **overrides: object,
               ) -> fedge_pb2.UpdateHeader:
        fields: dict[str, object] = dict(
            session_id=self.session, task_id=task.task_id, round=task.round,
            kind=fedge_pb2.WEIGHTS, encoding=fedge_pb2.F32, num_examples=100,
            num_tensors=len(arrays), sha256=stream_sha256(arrays))
        fields.update(overrides)
        return fedge_pb2.UpdateHeader(**fields)  # type: ignore[arg-type]

    def stream(self, task: fedge_pb2.Task, arrays: Arrays,
               edit: Callable[[list[fedge_pb2.TensorChunk]], None] | None = None,
               **header: object) -> list[fedge_pb2.UpdateChunk]:
        """An update stream, its tensor chunks passed through edit first."""
        chunks = list(iter_chunks(arrays))
        if edit is not None:
            edit(chunks)
        return [fedge_pb2.UpdateChunk(header=self.header(task, arrays, **header)),
                *(fedge_pb2.UpdateChunk(tensor=c) for c in chunks)]

    def submit(self, messages: Iterable[fedge_pb2.UpdateChunk]) -> fedge_pb2.SubmitReply:
        return self.stub.SubmitUpdate(iter(messages), metadata=self.metadata, timeout=30)

    def fetch(self, version: int, offset: int = 0) -> bytes:
        chunks = self.stub.FetchModel(fedge_pb2.FetchRequest(
            session_id=self.session, model_version=version, offset=offset),
            metadata=self.metadata, timeout=30)
        return b"".join(c.data for c in chunks)

    def close(self) -> None:
        self.channel.close()


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a call that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    return info.value.code(), info.value.details() or ""
