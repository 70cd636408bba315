"""What an operator sees of a real run: Prometheus metrics, `fedge status`, JSON logs."""

from __future__ import annotations

import json
import logging
import time
import urllib.request

import grpc
import pytest

from fedge.cli import main
from fedge.logs import JsonFormatter, TextFormatter
from fedge.protos import fedge_pb2
from tests.faults.rawdevice import RawDevice
from tests.fleet import Fleet, free_port


def scrape(port: int) -> dict[str, float]:
    """The unlabelled and labelled samples of /metrics, keyed as they are printed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def test_metrics_and_status_follow_a_real_run(fleet: Fleet,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    dirs = fleet.partitions("digits-mlp", 3)
    server = fleet.server(rounds=3, min_clients=3, metrics_port=free_port(),
                          status_interval_s=0.2, linger_s=1.0)
    port = server.start()
    before = scrape(server.metrics_port)
    assert before["fedge_rounds_committed_total"] == 0
    assert before["fedge_model_version"] == 0

    # A device with a token but the wrong model is refused, and the refusal is counted.
    intruder = RawDevice(port, "intruder", fleet.token("intruder"))
    with pytest.raises(grpc.RpcError):
        intruder.join(task="digits-cnn")
    # A device token may not read the status.
    with pytest.raises(grpc.RpcError) as info:
        intruder.stub.Status(fedge_pb2.StatusRequest(), metadata=intruder.metadata)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    intruder.close()

    operator = server.tokens.create("ops", role="operator")

    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}")
    # While the run goes on, status lists every connected device, by RPC and from disk.
    deadline = time.monotonic() + 60
    while True:
        assert main(["status", "--server", f"127.0.0.1:{port}", "--insecure", "--token",
                     operator, "--json"]) == 0
        remote = json.loads(capsys.readouterr().out)
        if len(remote["devices"]) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(d["device_id"] for d in remote["devices"]) == ["dev-0", "dev-1", "dev-2"]
    assert all(d["live"] and d["authenticated"] for d in remote["devices"])
    assert remote["task"] == "digits-mlp" and remote["rounds_total"] == 3
    time.sleep(0.5)  # the status file is rewritten every 0.2 s
    assert main(["status", "--state-dir", str(fleet.tmp / "state"), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert sorted(d["device_id"] for d in local["devices"]) == ["dev-0", "dev-1", "dev-2"]
    during = scrape(server.metrics_port)
    assert during["fedge_devices_connected"] == 3

    records = server.wait(timeout=120)
    fleet.join_clients()
    assert records[-1].round == 3
    # The endpoint is gone with the server; what it said last is in the status file.
    assert main(["status", "--state-dir", str(fleet.tmp / "state")]) == 0
    text = capsys.readouterr().out
    assert "phase done" in text and "dev-2" in text and "Join/INVALID_ARGUMENT 1" in text
    # After the last round, the round shown is the last one, not one that never opens.
    assert "round 3/3" in text and "round 4/3" not in text


def test_metrics_count_rounds_updates_and_refusals(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(rounds=2, min_clients=2, metrics_port=free_port(), linger_s=3.0)
    port = server.start()
    ghost = RawDevice(port, "ghost", "fdg_" + "x" * 43)
    with pytest.raises(grpc.RpcError):
        ghost.join()
    ghost.close()
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}")
    deadline = time.monotonic() + 120
    while server.rounds.progress().phase != "done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    samples = scrape(server.metrics_port)  # scraped while devices are told to stop
    assert samples["fedge_rounds_committed_total"] == 2
    assert samples["fedge_model_version"] == 2
    assert samples["fedge_updates_accepted_total"] == 4
    assert samples['fedge_updates_refused_total{method="Join",reason="UNAUTHENTICATED"}'] == 1
    assert samples["fedge_round_duration_seconds_count"] == 2
    assert samples["fedge_bytes_received_total"] > 4 * 100_000
    assert samples["fedge_bytes_sent_total"] > 4 * 100_000
    assert samples["fedge_aggregation_seconds_total"] > 0
    server.wait(timeout=30)
    fleet.join_clients()


def test_log_formats_carry_the_same_event_names() -> None:
    record = logging.LogRecord("server.rounds", logging.INFO, __file__, 1,
                               "round %d committed", (3,), None)
    record.event = "round.committed"
    record.round = 3
    entry = json.loads(JsonFormatter().format(record))
    assert entry["event"] == "round.committed" and entry["round"] == 3
    assert entry["message"] == "round 3 committed" and entry["level"] == "INFO"
    assert "[round.committed] round 3 committed" in TextFormatter().format(record)
    plain = logging.LogRecord("client.daemon", logging.INFO, __file__, 1, "hi", (), None,
                              func="_join")
    assert json.loads(JsonFormatter().format(plain))["event"] == "client.daemon.join"


def test_a_daemon_exposes_its_own_metrics(fleet: Fleet) -> None:
    from fedge.metrics import MetricsEndpoint, ValuesCollector

    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(rounds=2, min_clients=2)
    port = server.start()
    clients = [fleet.client(port, d, f"dev-{k}") for k, d in enumerate(dirs)]
    server.wait(timeout=120)
    fleet.join_clients()
    endpoint = MetricsEndpoint(ValuesCollector(clients[0].daemon.stats.metrics))
    metrics_port = endpoint.start("127.0.0.1", 0)
    try:
        samples = scrape(metrics_port)
    finally:
        endpoint.stop()
    model_bytes = sum(s.nbytes for s in server.rounds.specs)
    assert samples["fedge_client_rounds_trained_total"] == 2
    assert samples["fedge_client_last_round"] == 2
    assert samples["fedge_client_bytes_sent_total"] == 2 * model_bytes
    assert samples["fedge_client_bytes_received_total"] > 2 * model_bytes
    assert samples["fedge_client_train_seconds_total"] > 0
