"""A secure round on the wire: the TRAIN task says it is secure, and a plain update (a
device that does not know the protocol) is refused instead of folded in the clear."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from fedge.server.app import FedgeServer
from tests.faults.rawdevice import RawDevice, digits_weights, refusal


def test_train_task_carries_secure_params_and_plain_updates_are_refused(
        make_server: Callable[..., FedgeServer]) -> None:
    server = make_server(secure_aggregation=True, allow_anonymous=True,
                         round_timeout_s=5.0, secure_stage_timeout_s=1.0)
    port = server.start()
    devices = [RawDevice(port, f"raw-{i}", None) for i in range(2)]
    try:
        for d in devices:
            d.join()
        devices[1].poll(0.5)  # anonymous devices are sampled once they have polled
        task = devices[0].poll_train()
        assert task.train.HasField("secure")
        p = task.train.secure
        assert p.degree == 1 and p.threshold == 1 and len(p.seed) == 16
        assert p.size == sum(a.size for a in digits_weights().values())
        assert p.clip == 10.0 and p.weight_cap == 100 and p.scale > 0
        code, message = refusal(lambda: devices[0].submit(
            devices[0].stream(task, digits_weights())))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "secure" in message
    finally:
        for d in devices:
            d.close()
