"""A secure round on the wire: the TRAIN task says it is secure, and a plain update (a
device that does not know the protocol) is refused instead of folded in the clear."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from fedge.protos import fedge_pb2
from fedge.secure import prg
from fedge.server.app import FedgeServer
from fedge.server.fields import HEADER_METRICS
from tests.faults.rawdevice import RawDevice, digits_weights, refusal


@contextmanager
def two_raw_devices(make_server: Callable[..., FedgeServer], stage_s: float = 1.0
                    ) -> Iterator[list[RawDevice]]:
    """Two protocol-level devices joined to a secure server, both sampled."""
    server = make_server(secure_aggregation=True, allow_anonymous=True,
                         round_timeout_s=2 * stage_s + 3, secure_stage_timeout_s=stage_s)
    port = server.start()
    devices = [RawDevice(port, f"raw-{i}", None) for i in range(2)]
    try:
        for d in devices:
            d.join()
        devices[1].poll(0.5)  # anonymous devices are sampled once they have polled
        yield devices
    finally:
        for d in devices:
            d.close()


def test_train_task_carries_secure_params_and_plain_updates_are_refused(
        make_server: Callable[..., FedgeServer]) -> None:
    with two_raw_devices(make_server) as devices:
        task = devices[0].poll_train()
        assert task.train.HasField("secure")
        p = task.train.secure
        assert p.degree == 1 and p.threshold == 1 and len(p.seed) == 16
        assert p.size == sum(a.size for a in digits_weights().values())
        assert p.clip == 10.0 and p.weight_cap == 100 and p.scale > 0
        code, message = refusal(lambda: devices[0].submit(
            devices[0].stream(task, digits_weights())))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "secure" in message


def test_a_masked_header_with_too_many_metrics_is_refused_first(
        make_server: Callable[..., FedgeServer]) -> None:
    # As a plain update's header is: before its task or stage is looked at.
    with two_raw_devices(make_server) as devices:
        task = devices[0].poll_train()
        header = fedge_pb2.MaskedHeader(
            session_id=devices[0].session, task_id=task.task_id, round=task.round,
            num_examples=1, size=task.train.secure.size,
            metrics={f"m{i}": 1.0 for i in range(HEADER_METRICS + 1)})
        code, message = refusal(lambda: devices[0].stub.SubmitMasked(
            iter([fedge_pb2.MaskedChunk(header=header)]), metadata=devices[0].metadata,
            timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "over the limit" in message


def test_adverts_relay_known_mask_generators_and_read_others_as_chacha20(
        make_server: Callable[..., FedgeServer]) -> None:
    # A device names the generator it prefers; the server relays a name it knows and
    # replaces any other (here 10 kB of one) with ChaCha20's, so that what it sends every
    # device stays small and every device computes the same choice from it.
    names = [prg.AES_CTR, "x" * 10_000]
    with two_raw_devices(make_server, stage_s=5.0) as devices:
        tasks = [d.poll_train() for d in devices]

        def advertise(i: int, wait: float) -> fedge_pb2.SecureReply:
            d = devices[i]
            return d.stub.SecureStep(fedge_pb2.SecureRequest(
                session_id=d.session, task_id=tasks[i].task_id, round=tasks[i].round,
                stage=fedge_pb2.SECURE_ADVERTISE, wait_seconds=wait,
                advert=fedge_pb2.SecureAdvert(device_id=f"raw-{i}", encrypt_public=bytes(32),
                                              mask_public=bytes([i + 1]) * 32,
                                              mask_prg=names[i])),
                metadata=d.metadata, timeout=30)

        assert not advertise(0, 0.0).ready
        reply = advertise(1, 5.0)
        assert reply.ready
        assert {a.device_id: a.mask_prg for a in reply.adverts} == {
            "raw-0": prg.AES_CTR, "raw-1": prg.CHACHA20}
        assert advertise(0, 5.0).adverts == reply.adverts  # the same advert again
