"""Edge artifacts over real gRPC: built mid-run and after the last round, shipped with
DEPLOY, installed by the devices that trust the server's key, refused by one that does
not, and served again by a restarted server."""

from __future__ import annotations

import pytest

from fedge.edge.compiler.keys import PUBLIC_FILE, SigningKey
from fedge.edge.runtime import ModelDir, load_public_key, verify
from fedge.edge.runtime.artifact import unpack
from fedge.server.store import StateStore
from tests.fleet import Fleet

pytestmark = pytest.mark.slow


def test_devices_install_signed_artifacts_and_refuse_foreign_ones(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 3)
    server = fleet.server(rounds=2, min_clients=3, edge=True, edge_every=1)
    port = server.start()
    trusted = str(fleet.tmp / "state" / PUBLIC_FILE)
    stranger = fleet.tmp / "stranger.pem"
    stranger.write_text(SigningKey.generate().public_pem())
    good = [fleet.client(port, d, f"dev-{k}", trust_key=trusted,
                         model_dir=str(fleet.tmp / f"models-{k}"))
            for k, d in enumerate(dirs[:2])]
    wary = fleet.client(port, dirs[2], "wary", trust_key=str(stranger),
                        model_dir=str(fleet.tmp / "models-wary"))
    server.wait(timeout=180)
    fleet.join_clients(timeout=60)

    for k, client in enumerate(good):
        stats = client.stats[0]
        assert stats.edge_refused == 0 and stats.edge_installed >= 1, stats
        current = ModelDir(fleet.tmp / f"models-{k}").current()
        assert current is not None and current.name.startswith("round-000002-")
    assert wary.stats[0].edge_refused >= 1 and wary.stats[0].edge_installed == 0
    assert ModelDir(fleet.tmp / "models-wary").current() is None
    # What operators see: each device's installed model, and the artifact counts.
    edge_models = {d.device_id: d.edge_model for d in server.registry.all()}
    assert edge_models["dev-0"] == edge_models["dev-1"] == "2" and edge_models["wary"] == ""
    installs = sum(c.stats[0].edge_installed for c in good)
    assert server._edge_metrics() == {"fedge_edge_artifacts_built": 2.0,
                                      "fedge_edge_artifacts_installed": float(installs)}

    store = StateStore(fleet.tmp / "state")
    accuracy = store.metric_values(2, "device", "edge_accuracy")
    refused = store.metric_values(2, "device", "edge_refused")
    store.close()
    assert set(accuracy) == {"dev-0", "dev-1"} and min(accuracy.values()) > 0.8
    assert set(refused) == {"wary"}
    key_before = (fleet.tmp / "state" / PUBLIC_FILE).read_text()

    # A restarted server keeps its key and serves the artifact it built, without a rebuild.
    again = fleet.server(rounds=2, min_clients=1, edge=True)
    assert again.deployments is not None and again.deployments.latest is not None
    assert again.deployments.latest.round == 2 and not again.deployments.busy()
    assert (fleet.tmp / "state" / PUBLIC_FILE).read_text() == key_before
    blob, sha = again.rounds.artifact_blob(2, "default")
    manifest = verify(unpack(blob), load_public_key(trusted))
    assert manifest.round == 2 and sha == again.deployments.latest.sha256
