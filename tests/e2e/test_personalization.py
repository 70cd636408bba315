"""Personalization over real gRPC: after the last round each asking device is handed the
final model before its STOP, fine-tunes it locally and reports held-out accuracies the
server records; the global accuracy it reports is the final model's on its held-out
slice, and the personalized weights (and the device-local artifact) stay on the device."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedge.client.data import load_local_data
from fedge.client.data.holdout import split_holdout
from fedge.edge.compiler.keys import SigningKey
from fedge.edge.runtime import ArtifactError, EdgeModel, ModelDir, read_artifact, verify
from fedge.edge.runtime.verify import verify_local
from fedge.server.store import StateStore
from fedge.tasks import load_task
from fedge.tasks.training import evaluate, load_weights
from fedge.tensors import from_blob
from tests.fleet import Fleet

pytestmark = pytest.mark.slow


def test_devices_personalize_the_final_model_and_report_held_out_accuracy(
        fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 3)
    server = fleet.server(rounds=2, min_clients=3)
    port = server.start()
    models = {k: fleet.tmp / f"models-{k}" for k in range(3)}
    fleet.client(port, dirs[0], "dev-0", personalize_epochs=3, personalize="head",
                 model_dir=str(models[0]), personal_artifact=True)
    fleet.client(port, dirs[1], "dev-1", personalize_epochs=3, personalize="full",
                 model_dir=str(models[1]))
    plain = fleet.client(port, dirs[2], "dev-2", model_dir=str(models[2]))
    server.wait(timeout=180)
    fleet.join_clients(timeout=60)

    store = StateStore(fleet.tmp / "state")
    try:
        final, _ = from_blob(store.blob(2))
        personal = store.metric_values(2, "device", "personal_accuracy")
        reported_global = store.metric_values(2, "device", "global_accuracy")
        accepted = sum(r.clients for r in store.rounds() if r.round > 0)
    finally:
        store.close()
    assert set(personal) == set(reported_global) == {"dev-0", "dev-1"}  # not dev-2
    assert plain.daemon.stats.personal == {}
    assert accepted == 6  # two rounds of three updates: nothing personal was sent up
    task = load_task("digits-mlp")
    model = task.build_model()
    load_weights(model, final)
    for k in (0, 1):
        # The global accuracy a device reports is the final model's on its held-out
        # slice, computed here directly from its partition.
        _, (held_x, held_y) = split_holdout(*load_local_data((str(dirs[k]),), task.schema))
        direct = evaluate(task, model, held_x, held_y)["accuracy"]
        assert reported_global[f"dev-{k}"] == pytest.approx(direct, abs=1e-9)
        kept = json.loads((models[k] / "personal" / "personalization.json").read_text())
        assert kept["round"] == 2 and kept["holdout_examples"] == len(held_y) > 0
        assert kept["personal_accuracy"] == pytest.approx(personal[f"dev-{k}"])
        weights, meta = from_blob((models[k] / "personal" / "weights.safetensors").read_bytes())
        assert meta == {"round": "2"}
        # head: only the last layer moved from the final global model; full: the body too
        moved = {n for n in weights if not np.array_equal(weights[n], final[n])}
        assert moved == ({"4.weight", "4.bias"} if k == 0 else set(weights)), moved
    _check_device_local_artifact(models[0] / "personal" / "artifact", fleet.tmp)


def _check_device_local_artifact(path: Path, tmp: Path) -> None:
    files = read_artifact(path)
    manifest = verify_local(files)
    assert manifest.device_local and "signature" not in manifest.raw
    assert manifest.raw["device_id"] == "dev-0" and manifest.round == 2
    EdgeModel.open(path, local=True).probe()  # loads and runs here
    # Never taken for the server's model: refused by verify and by an install...
    key = SigningKey.load_or_create(tmp / "state").public_bytes
    with pytest.raises(ArtifactError, match="device-local"):
        verify(files, key)
    with pytest.raises(ArtifactError, match="device-local"):
        ModelDir(tmp / "installed").install(files, key)
    # ...and a server's artifact is not opened as a device-local one.
    signed = dict(manifest.raw, origin="server")
    forged = type(files)(json.dumps(signed).encode(), files.model)
    with pytest.raises(ArtifactError, match="not a device-local artifact"):
        verify_local(forged)
