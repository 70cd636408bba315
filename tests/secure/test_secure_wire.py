"""A secure round on the wire: the keys travel with the polls, the TRAIN task says the
round is secure and carries their roster, and a plain update (a device that does not
know the protocol) is refused instead of folded in the clear."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from fedge.protos import fedge_pb2
from fedge.secure import prg
from fedge.server.app import FedgeServer
from fedge.server.fields import HEADER_METRICS
from fedge.tensors import specs_to_proto
from tests.faults.rawdevice import RawDevice, digits_specs, digits_weights, refusal


def advert(i: int, mask_prg: str = prg.AES_CTR) -> fedge_pb2.SecureAdvert:
    """raw-i's advert (the keys are never used here)."""
    return fedge_pb2.SecureAdvert(device_id=f"raw-{i}", encrypt_public=bytes([i + 1]) * 32,
                                  mask_public=bytes([i + 2]) * 32, mask_prg=mask_prg)


@contextmanager
def two_raw_devices(make_server: Callable[..., FedgeServer], stage_s: float = 1.0,
                    prgs: tuple[str, str] = (prg.AES_CTR, prg.AES_CTR)
                    ) -> Iterator[list[RawDevice]]:
    """Two protocol-level devices joined to a secure server, both sampled (their polls
    carry adverts naming prgs)."""
    server = make_server(secure_aggregation=True, allow_anonymous=True,
                         round_timeout_s=2 * stage_s + 3, secure_stage_timeout_s=stage_s)
    port = server.start()
    devices = [RawDevice(port, f"raw-{i}", None, advert=advert(i, prgs[i])) for i in range(2)]
    try:
        for d in devices:
            d.join()
        devices[1].poll(0.5)  # sampled once its poll has brought keys
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
    with two_raw_devices(make_server, prgs=(prg.AES_CTR, "x" * 10_000)) as devices:
        tasks = [d.poll_train() for d in devices]
        roster = tasks[0].train.secure.roster
        assert [(a.device_id, a.mask_prg) for a in roster] == [
            ("raw-0", prg.AES_CTR), ("raw-1", prg.CHACHA20)]
        assert [a.mask_public for a in roster] == [advert(0).mask_public,
                                                   advert(1).mask_public]
        assert tasks[1].train.secure.roster == roster  # two devices: each the other's neighbour
        assert list(tasks[0].train.secure.devices) == ["raw-0", "raw-1"]
        assert tasks[0].train.secure.mask_prg == prg.CHACHA20  # not every advert named AES


def test_only_devices_whose_polls_bring_keys_are_sampled_and_keys_serve_one_round(
        make_server: Callable[..., FedgeServer]) -> None:
    server = make_server(secure_aggregation=True, allow_anonymous=True, min_clients=2,
                         round_timeout_s=4.0, secure_stage_timeout_s=1.0)
    port = server.start()
    keyed, keyless, joined = (RawDevice(port, f"raw-{i}", None) for i in range(3))
    keyed.advert = advert(0)
    try:
        assert joined.stub.Join(fedge_pb2.JoinRequest(  # told to bring keys to its polls
            device_id="raw-2", task="digits-mlp", fingerprint=specs_to_proto(digits_specs()),
            num_examples=100), timeout=10).secure_rounds
        keyed.join()
        keyless.join()
        keyless.poll(0.5)
        # Two live devices, one with keys: the round waits for a second with keys.
        assert keyed.poll(2.5).kind == fedge_pb2.WAIT
        keyless.advert = advert(1)
        first = keyless.poll_train()
        assert [a.device_id for a in first.train.secure.roster] == ["raw-0", "raw-1"]
        # A poll's keys went into that roster and out of the registry: the device must
        # bring fresh ones before a round can list it again.
        assert server.registry.get(keyed.session).advert is None
        # A malformed advert (short keys, another device's id) is refused on the poll.
        keyless.advert = fedge_pb2.SecureAdvert(device_id="raw-1", encrypt_public=b"k",
                                                mask_public=bytes(32))
        code, message = refusal(lambda: keyless.poll(0.1))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "32-byte" in message
        keyless.advert = advert(0)
        code, _ = refusal(lambda: keyless.poll(0.1))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        for d in (keyed, keyless, joined):
            d.close()
