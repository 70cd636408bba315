"""Admission limits on a real server: request rate per device and uploads in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc

from fedge.protos import fedge_pb2
from fedge.server.app import FedgeServer
from tests.faults.rawdevice import RawDevice, digits_weights, refusal


def test_a_device_over_its_request_rate_is_told_to_back_off(
        make_server: Callable[..., FedgeServer]) -> None:
    server = make_server(rate_limit=5.0, rate_burst=5.0)
    port = server.start()
    greedy = RawDevice(port, "greedy", server.tokens.create("greedy"))
    calm = RawDevice(port, "calm", server.tokens.create("calm"))
    greedy.join()
    calm.join()
    codes = []
    for _ in range(12):
        try:
            greedy.fetch(0, offset=10**6)  # cheap: refused for its offset when admitted
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    limited = [c for c in codes if c is grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert 4 <= len(limited) <= 8, codes  # a burst of 5 (less the join), then refusals
    code, message = refusal(lambda: greedy.fetch(0))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "too many requests" in message
    assert len(calm.fetch(0)) > 0  # another device is not affected
    time.sleep(1.0)  # the bucket refills at 5 per second
    assert len(greedy.fetch(0)) > 0
    greedy.close()
    calm.close()


def test_anonymous_devices_are_limited_per_address_not_per_connection(
        make_server: Callable[..., FedgeServer]) -> None:
    """Two anonymous devices on one host, each over its own connection (its own
    ephemeral port), share one bucket: a device cannot escape the limit by reconnecting."""
    server = make_server(allow_anonymous=True, rate_limit=0.5, rate_burst=4.0)
    port = server.start()
    first = RawDevice(port, "first", None, own_connection=True)
    second = RawDevice(port, "second", None, own_connection=True)
    first.join()
    for _ in range(3):  # the rest of the burst of 4
        refusal(lambda: first.fetch(0, offset=10**6))  # refused for its offset: admitted
    code, message = refusal(second.join)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "too many requests" in message
    assert "peer ipv4:127.0.0.1'" in message or "peer ipv6:" in message, message
    first.close()
    second.close()


def test_uploads_beyond_the_cap_are_refused_not_queued(
        make_server: Callable[..., FedgeServer]) -> None:
    server = make_server(max_uploads=1)
    port = server.start()
    slow = RawDevice(port, "slow", server.tokens.create("slow"))
    other = RawDevice(port, "other", server.tokens.create("other"))
    slow.join()
    other.join()
    task = slow.poll_train()
    release = threading.Event()
    stream = slow.stream(task, digits_weights())

    def trickle() -> Iterator[fedge_pb2.UpdateChunk]:
        yield stream[0]
        release.wait(20)
        yield from stream[1:]

    result: list[object] = []
    uploader = threading.Thread(target=lambda: result.append(slow.submit(trickle())))
    uploader.start()
    time.sleep(0.5)  # the slow upload holds the only slot
    code, message = refusal(lambda: other.submit(other.stream(other.poll_train(),
                                                               digits_weights())))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in message
    release.set()
    uploader.join(20)
    assert result and result[0].accepted  # type: ignore[attr-defined]
    slow.close()
    other.close()


def test_long_polls_beyond_the_worker_reserve_are_answered_at_once(
        make_server: Callable[..., FedgeServer]) -> None:
    # 8 workers keep 4 for joins, fetches and uploads: at most 4 polls are held.
    server = make_server(max_workers=8, poll_seconds=3.0, min_clients=10)
    port = server.start()
    devices = [RawDevice(port, f"d{k}", server.tokens.create(f"d{k}")) for k in range(6)]
    for device in devices:
        device.join()
    replies: dict[str, tuple[float, fedge_pb2.Task]] = {}

    def poll(device: RawDevice) -> None:
        started = time.monotonic()
        task = device.stub.PollTask(
            fedge_pb2.PollRequest(session_id=device.session, wait_seconds=3.0),
            metadata=device.metadata, timeout=10)
        replies[device.device_id] = (time.monotonic() - started, task)

    threads = [threading.Thread(target=poll, args=(d,)) for d in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    quick = sorted(k for k, (seconds, _) in replies.items() if seconds < 1.5)
    held = sorted(k for k, (seconds, _) in replies.items() if seconds >= 2.5)
    assert len(held) == 4 and len(quick) == 2, replies
    for k in quick:  # told to come back within the poll period, not at once
        task = replies[k][1]
        assert task.kind == fedge_pb2.WAIT and 0.75 <= task.retry_after_seconds <= 2.25, task
    assert len(devices[0].fetch(0)) > 0  # the reserve still serves other calls
    for device in devices:
        device.close()
