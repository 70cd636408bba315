"""Admission before resources, on a real server: streams that hold nothing until their
header checks out, clocks that cut idle and slow streams, and rate limits per address
for callers without a token. The hostile side is a bare client over the generated stubs
(RawDevice); the honest side is fedge's own daemon."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from fedge.client.channel import open_channel
from fedge.client.daemon import Daemon, DaemonStats
from fedge.client.data import load_local_data
from fedge.client.trainer import Trainer
from fedge.config import ClientConfig
from fedge.protos import fedge_pb2
from fedge.server.app import FedgeServer
from fedge.tasks import load_task
from fedge.tensors import iter_chunks
from tests.faults.rawdevice import RawDevice, digits_weights, refusal
from tests.fleet import Fleet

Code = grpc.StatusCode
DEADLINE = 20.0  # a round's deadline: a round that runs into it was stopped by the attack


def _silent(stop: threading.Event) -> Iterator[fedge_pb2.UpdateChunk]:
    """An update stream that never sends a message."""
    stop.wait(60)
    yield from ()


def _flood(port: int, stop: threading.Event, codes: list[Code]) -> None:
    """PollTask without a token, as fast as it goes, each thread on its own connection."""
    raw = RawDevice(port, "flood", None, own_connection=True)
    try:
        while not stop.is_set():
            try:
                raw.stub.PollTask(fedge_pb2.PollRequest(session_id="x"), timeout=5)
            except grpc.RpcError as exc:
                codes.append(exc.code())
    finally:
        raw.close()


@pytest.mark.slow
def test_idle_streams_and_an_anonymous_poll_flood_do_not_stop_the_run(
        make_server: Callable[..., FedgeServer], fleet: Fleet) -> None:
    """32 SubmitUpdate streams that never send a byte, from one enrolled device's token
    (as many as the server's upload slots), and a PollTask flood without a token, at
    once: the honest daemons finish both rounds, none near its deadline."""
    server = make_server(rounds=2, min_clients=2, round_timeout_s=DEADLINE,
                         stream_idle_s=1.0, edge=False)
    port = server.start()
    mallory = RawDevice(port, "mallory", server.tokens.create("mallory"))
    stop = threading.Event()
    idle = [mallory.stub.SubmitUpdate.future(_silent(stop), metadata=mallory.metadata,
                                             timeout=60) for _ in range(32)]
    codes: list[Code] = []
    flooders = [threading.Thread(target=_flood, args=(port, stop, codes), daemon=True)
                for _ in range(2)]
    for thread in flooders:
        thread.start()
    try:
        data = fleet.partitions("digits-mlp", 2)
        started = time.monotonic()
        honest = [fleet.client(port, d, f"honest-{k}",
                               token=server.tokens.create(f"honest-{k}"))
                  for k, d in enumerate(data)]
        records = server.wait(timeout=2 * DEADLINE + 30)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        for thread in flooders:
            thread.join(10)
    fleet.join_clients()
    assert [r.round for r in records] == [0, 1, 2]
    # Both rounds within one round's deadline: no attempt ran into its deadline (a
    # round's record times only its last attempt; the wall clock times them all).
    assert elapsed < DEADLINE and all(r.clients == 2 for r in records[1:]), (elapsed, records)
    assert all(c.stats[0].rounds_trained == 2 for c in honest)
    # One stream per enrolled device at a time: the one holding it is cut when idle,
    # the others are refused at once (under load, a late one may hold it next). A call
    # the server cancels ends CANCELLED on its client, or now and then UNAVAILABLE when
    # the cancel overtakes the call's first response on the wire.
    ends = [f.code().name for f in idle if f.exception(10) is not None]
    cut = [e for e in ends if e != "ABORTED"]
    assert len(ends) == 32 and set(cut) <= {"CANCELLED", "UNAVAILABLE"}, ends
    assert ends.count("ABORTED") >= 24 and len(cut) == server.service.watch.cuts >= 1, ends
    # The flood was told who it is (no token), then to slow down (per address).
    assert Code.UNAUTHENTICATED in codes and Code.RESOURCE_EXHAUSTED in codes
    mallory.close()


def _trickle(stream: list[fedge_pb2.UpdateChunk], pause: float,
             stop: threading.Event) -> Iterator[fedge_pb2.UpdateChunk]:
    for message in stream:
        yield message
        if stop.wait(pause):
            return


def _small_chunks(device: RawDevice, task: fedge_pb2.Task,
                  chunk_bytes: int) -> list[fedge_pb2.UpdateChunk]:
    arrays = digits_weights()
    return [fedge_pb2.UpdateChunk(header=device.header(task, arrays)),
            *(fedge_pb2.UpdateChunk(tensor=c) for c in iter_chunks(arrays, chunk_bytes))]


def test_a_slow_upload_is_cut_at_its_rounds_deadline_and_a_second_one_is_refused(
        make_server: Callable[..., FedgeServer]) -> None:
    deadline = 4.0
    server = make_server(min_clients=1, round_timeout_s=deadline, stream_idle_s=2.0,
                         edge=False)
    port = server.start()
    slow = RawDevice(port, "slow", server.tokens.create("slow"))
    slow.join()
    task = slow.poll_train()
    stop = threading.Event()
    # 26 chunks of 4 KiB, one every 0.5 s: never idle, but 13 s > the deadline.
    started = time.monotonic()
    upload = slow.stub.SubmitUpdate.future(
        _trickle(_small_chunks(slow, task, 4096), 0.5, stop), metadata=slow.metadata,
        timeout=60)
    time.sleep(0.5)
    code, message = refusal(lambda: slow.submit(slow.stream(task, digits_weights())))
    assert code is Code.ABORTED and "one at a time" in message
    assert upload.exception(30) is not None and upload.code() is Code.CANCELLED
    stop.set()
    assert time.monotonic() - started < deadline + 1.5  # cut at the deadline, not later
    assert server.service.watch.cuts == 1
    slow.close()


def test_empty_chunks_too_many_chunks_and_a_wrong_tensor_count_are_refused(
        make_server: Callable[..., FedgeServer]) -> None:
    # Each refusal settles the round's only task: the round is retried at once.
    server = make_server(min_clients=1, round_timeout_s=30.0, edge=False,
                         max_round_attempts=0, retry_backoff_s=0.1)
    port = server.start()
    device = RawDevice(port, "d", server.tokens.create("d"))
    device.join()
    arrays = digits_weights()
    task = device.poll_train()
    header = fedge_pb2.UpdateChunk(header=device.header(task, arrays))
    empty = fedge_pb2.UpdateChunk(tensor=fedge_pb2.TensorChunk(name="0.weight"))
    code, message = refusal(lambda: device.submit([header, *[empty] * 1000]))
    assert code is Code.INVALID_ARGUMENT and "empty chunk" in message
    task = device.poll_train()
    code, message = refusal(lambda: device.submit(_small_chunks(device, task, 4)))
    assert code is Code.INVALID_ARGUMENT and "chunks, more than" in message
    task = device.poll_train()
    code, message = refusal(lambda: device.submit(
        device.stream(task, arrays, num_tensors=10**6)))
    assert code is Code.INVALID_ARGUMENT and "announces 1000000 tensors" in message
    task = device.poll_train()  # chunks of 4 KiB are fine
    assert device.submit(_small_chunks(device, task, 4096)).accepted
    device.close()


def test_calls_without_a_token_are_limited_per_address(
        make_server: Callable[..., FedgeServer]) -> None:
    """Callers without a token (refused, on a server that wants tokens) are still rate
    limited, per address over any number of connections; an enrolled device behind the
    same address is not slowed by them."""
    server = make_server(rate_limit=1.0, rate_burst=4.0)
    port = server.start()
    strangers = [RawDevice(port, f"s{k}", None, own_connection=True) for k in range(3)]
    codes = []
    for k in range(12):
        codes.append(refusal(strangers[k % 3].join)[0])
    assert codes[:4] == [Code.UNAUTHENTICATED] * 4, codes
    assert codes.count(Code.RESOURCE_EXHAUSTED) >= 7, codes
    with_token = RawDevice(port, "enrolled", server.tokens.create("enrolled"))
    assert with_token.join()
    # Made-up tokens cost a lookup each until their address has spent its burst.
    forger = RawDevice(port, "forger", "fdg_made-up", own_connection=True)
    forged = [refusal(forger.join)[0] for _ in range(8)]
    assert forged[:4] == [Code.UNAUTHENTICATED] * 4 and forged[-1] is Code.RESOURCE_EXHAUSTED
    for device in (*strangers, with_token, forger):
        device.close()


def test_anonymous_joins_do_not_make_a_round_wait_for_its_deadline(
        make_server: Callable[..., FedgeServer]) -> None:
    """500 anonymous joins from one address (Sybils): one address holds at most
    anonymous_per_address of them, and a device that never polls for work is not
    sampled, so the round samples the honest device alone and commits on its update."""
    server = make_server(min_clients=1, allow_anonymous=True, anonymous_per_address=64,
                         rate_limit=0, round_timeout_s=DEADLINE, edge=False)
    port = server.start()
    crowd = RawDevice(port, "crowd", None)
    codes = []
    for k in range(500):
        try:
            crowd.join(f"sybil-{k}")
            codes.append(Code.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            assert "live anonymous devices" in (exc.details() or "")
    assert codes == [Code.OK] * 64 + [Code.RESOURCE_EXHAUSTED] * 436
    honest = RawDevice(port, "honest", server.tokens.create("honest"))
    honest.join()
    task = honest.poll_train()
    assert set(server.rounds.current.assignments) == {"honest"}
    assert honest.submit(honest.stream(task, digits_weights())).accepted
    records = server.wait(timeout=DEADLINE)
    assert records[-1].round == 1 and records[-1].seconds < DEADLINE / 2
    crowd.close()
    honest.close()


@pytest.mark.slow
def test_the_daemon_survives_an_overloaded_server_and_trains_each_task_once(
        make_server: Callable[..., FedgeServer], fleet: Fleet) -> None:
    """A server that answers many calls RESOURCE_EXHAUSTED (a small rate limit) and
    whose only upload slot a hostile device holds until the deadline: the daemon never
    exits, sends its update a bounded number of times, does not retrain it while the
    round is open, and trains the retried round."""
    deadline = 8.0
    server = make_server(rounds=1, min_clients=2, quorum_fraction=0.5,
                         round_timeout_s=deadline, max_uploads=1, stream_idle_s=3.0,
                         rate_limit=8.0, rate_burst=8.0, edge=False, retry_backoff_s=0.5)
    port = server.start()
    hog = RawDevice(port, "hog", server.tokens.create("hog"))
    hog.join()
    data = fleet.partitions("digits-mlp", 1)
    # A backoff that grows past what is left of the round: the old daemon gave up its
    # upload seconds before the deadline and retrained in a loop until it.
    honest = fleet.client(port, data[0], "honest", token=server.tokens.create("honest"),
                          backoff_initial_s=0.05, backoff_max_s=4.0)
    task = hog.poll_train()
    stop = threading.Event()
    # The hog holds the only slot for the round: one 4 KiB chunk a second, never idle.
    held = hog.stub.SubmitUpdate.future(_trickle(_small_chunks(hog, task, 4096), 1.0, stop),
                                        metadata=hog.metadata, timeout=60)
    assert held.exception(deadline + 10) is not None  # cut at the deadline
    stop.set()
    busy = server.service.refusals[("SubmitUpdate", "RESOURCE_EXHAUSTED")]
    retried = hog.poll_train()  # the round is sampled again: the hog settles at once
    assert retried.task_id != task.task_id
    code, _ = refusal(lambda: hog.submit(hog.stream(retried, digits_weights(),
                                                    num_tensors=99)))
    assert code is Code.INVALID_ARGUMENT
    records = server.wait(timeout=3 * deadline)
    fleet.join_clients()
    stats = honest.stats[0]
    assert 1 <= busy <= 8, busy  # UPLOAD_ATTEMPTS of one training, not a training loop
    assert stats.trainings == 2, stats  # the first attempt's task once, the retry's once
    assert records[-1].round == 1 and stats.rounds_trained == 1
    hog.close()


def test_a_refusal_name_does_not_make_a_transient_status_final() -> None:
    """The daemon reads CANCELLED, UNAVAILABLE and RESOURCE_EXHAUSTED as the server's
    state whatever refusal name comes with them."""
    from fedge.client.channel import TRANSIENT, Refusal
    from fedge.refusals import RULES, rule_for

    for code in ("CANCELLED", "UNAVAILABLE", "RESOURCE_EXHAUSTED"):
        assert code in TRANSIENT
        assert Refusal(code, "", "", rule_for(code)).transient
    too_large = Refusal("RESOURCE_EXHAUSTED", "too_large", "", RULES["too_large"])
    assert too_large.transient and not too_large.resend  # an update is not resent


class _StallFirstUpload(grpc.StreamUnaryClientInterceptor):
    """A link that stalls the first upload's first message for a while (a flaky radio),
    so that the server cuts that stream."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.stalled = seconds, False

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        """The first upload waits before its first message; the others go as they are."""
        if self.stalled:
            return continuation(details, requests)
        self.stalled = True

        def late() -> Iterator[Any]:
            time.sleep(self.seconds)
            yield from requests

        return continuation(details, late())


def test_the_daemon_resends_an_upload_the_server_cut(
        make_server: Callable[..., FedgeServer], fleet: Fleet) -> None:
    """The server cuts the daemon's stalled upload (the daemon sees CANCELLED from the
    server): the daemon resends it, does not retrain, and does not exit."""
    server = make_server(min_clients=1, stream_idle_s=1.0, edge=False)
    port = server.start()
    (data,) = fleet.partitions("digits-mlp", 1)
    config = ClientConfig(server=f"127.0.0.1:{port}", data=(str(data),), device_id="radio",
                          insecure=True, token=server.tokens.create("radio"),
                          backoff_initial_s=0.05, backoff_max_s=0.5, poll_seconds=1.0)
    task = load_task("digits-mlp")
    x, y = load_local_data(config.data, task.schema)
    daemon = Daemon(config, task, Trainer(task, x, y, "cpu"), channel_factory=lambda c: (
        grpc.intercept_channel(open_channel(c), _StallFirstUpload(3.0))))
    done: list[DaemonStats] = []
    thread = threading.Thread(target=lambda: done.append(daemon.run()), daemon=True)
    thread.start()
    try:
        records = server.wait(timeout=60)
        thread.join(30)
    finally:
        daemon.stop()
    assert records[-1].round == 1 and records[-1].clients == 1
    assert server.service.watch.cuts == 1
    (stats,) = done
    assert stats.rounds_trained == 1 and stats.trainings == 1 and stats.joins == 1
