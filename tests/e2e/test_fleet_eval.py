"""Federated evaluation over real gRPC: what the server records for each round equals the
same measurement made directly on the devices' held-out slices, the devices never train
on those slices, and an inference-only device contributes edge-model metrics."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from fedge.cli.status import format_status
from fedge.client.daemon import Daemon
from fedge.client.data import LocalData, load_local_data
from fedge.client.data.holdout import split_holdout
from fedge.client.evaluation import cross_entropy
from fedge.config import ClientConfig
from fedge.edge.compiler.keys import PUBLIC_FILE
from fedge.edge.runtime import EdgeModel
from fedge.server.fleet_eval import latest_gauges, recorded
from fedge.server.status import from_proto, to_proto
from fedge.server.store import StateStore
from fedge.tasks import load_task
from fedge.tasks.training import evaluate, load_weights
from fedge.tensors import from_blob
from tests.fleet import Fleet

pytestmark = pytest.mark.slow
HOLDOUT = 0.2


def test_recorded_evaluation_equals_a_direct_one_on_the_held_out_slices(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 3)
    server = fleet.server(rounds=2, min_clients=2, edge=True, eval_every_rounds=1,
                          holdout_fraction=HOLDOUT)
    port = server.start()
    trust = str(fleet.tmp / "state" / PUBLIC_FILE)
    trainers = [fleet.client(port, d, f"dev-{k}", trust_key=trust,
                             model_dir=str(fleet.tmp / f"models-{k}"))
                for k, d in enumerate(dirs[:2])]
    task = load_task("digits-mlp")
    viewer_config = ClientConfig(
        server=f"127.0.0.1:{port}", task="digits-mlp", data=(str(dirs[2]),),
        device_id="viewer", insecure=True, poll_seconds=2.0, backoff_initial_s=0.05,
        backoff_max_s=0.5, token=server.tokens.create("viewer"), trust_key=trust,
        inference_only=True, model_dir=str(fleet.tmp / "models-viewer"))
    local = LocalData(viewer_config.data, task.schema)
    local.rescan()
    viewer = Daemon(viewer_config, task, None, local)
    viewer_thread = threading.Thread(target=viewer.run, daemon=True)
    viewer_thread.start()
    server.wait(timeout=240)
    fleet.join_clients(timeout=60)
    viewer.stop()
    viewer_thread.join(30)

    held = {}
    for name, directory in [("dev-0", dirs[0]), ("dev-1", dirs[1]), ("viewer", dirs[2])]:
        x, y = load_local_data([str(directory)], task.schema)
        held[name] = split_holdout(x, y, HOLDOUT)[1]
    for k, client in enumerate(trainers):  # the held-out slice is never trained on
        x, y = load_local_data([str(dirs[k])], task.schema)
        assert client.daemon.trainer.num_examples == len(y) - len(held[f"dev-{k}"][1]) > 0

    store = StateStore(fleet.tmp / "state")
    try:
        fed = recorded(store)
        blobs = {r: store.blob(r) for r in (1, 2)}
        edge_devices = set(store.metric_values(2, "eval", "edge_examples"))
        global_devices = set(store.metric_values(2, "eval", "global_examples"))
    finally:
        store.close()
    assert sorted(fed) == [1, 2]
    model = task.build_model()
    for round_ in (1, 2):
        load_weights(model, from_blob(blobs[round_])[0])
        scores = [(evaluate(task, model, *held[d]), len(held[d][1])) for d in ("dev-0", "dev-1")]
        total = sum(n for _, n in scores)
        assert fed[round_]["fed_examples"] == total
        assert fed[round_]["fed_accuracy"] == pytest.approx(
            sum(s["accuracy"] * n for s, n in scores) / total, abs=1e-9)
        assert fed[round_]["fed_loss"] == pytest.approx(
            sum(s["loss"] * n for s, n in scores) / total, rel=1e-5)
    # The edge model of round 2, on every device's slice, the inference-only one's too.
    assert global_devices == {"dev-0", "dev-1"} and edge_devices == {"dev-0", "dev-1", "viewer"}
    edge = EdgeModel.open(fleet.tmp / "state" / "edge" / "round-000002")
    logits = {d: edge.logits(held[d][0]) for d in held}
    total = sum(len(held[d][1]) for d in held)
    assert fed[2]["fed_edge_examples"] == total
    assert fed[2]["fed_edge_accuracy"] == pytest.approx(sum(
        float((logits[d].argmax(1) == held[d][1]).sum()) for d in held) / total, abs=1e-9)
    assert fed[2]["fed_edge_loss"] == pytest.approx(sum(
        cross_entropy(logits[d].astype(np.float64), held[d][1]) * len(held[d][1])
        for d in held) / total, rel=1e-6)
    assert fed[1]["fed_edge_examples"] == 0  # no edge model was installed before round 2

    # What operators see: status.json (and `fedge status`) and the metrics gauges.
    status = json.loads((fleet.tmp / "state" / "status.json").read_text())
    rows = {r["round"]: r for r in status["rounds"]}
    assert rows[2]["fed_accuracy"] == pytest.approx(fed[2]["fed_accuracy"])
    assert rows[2]["fed_edge_examples"] == total and rows[0]["fed_examples"] == 0
    assert from_proto(to_proto(status))["rounds"] == status["rounds"]
    assert "fed acc" in format_status(status)
    store = StateStore(fleet.tmp / "state")
    try:
        gauges = latest_gauges(store)
    finally:
        store.close()
    assert gauges["fedge_federated_round"] == 2
    assert gauges["fedge_federated_edge_accuracy"] == pytest.approx(fed[2]["fed_edge_accuracy"])
