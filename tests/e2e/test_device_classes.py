"""Students per device class over real gRPC: a device its capabilities put in one class
and a device its operator labelled with another each install their own class's artifact;
a label the task does not define is refused at join."""

from __future__ import annotations

import json

import pytest

from fedge.edge.compiler.keys import PUBLIC_FILE
from fedge.edge.runtime import ModelDir
from fedge.errors import FedgeError
from tests.fleet import Fleet

TASK = "tests.edge.class_task:class_task"
pytestmark = pytest.mark.slow


def test_each_device_class_receives_and_installs_its_own_artifact(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 2)
    server = fleet.server(task=TASK, rounds=1, min_clients=2, edge=True)
    port = server.start()
    trusted = str(fleet.tmp / "state" / PUBLIC_FILE)
    # "board" by its capabilities (it reports this machine's memory), "sensor" by label.
    fleet.client(port, dirs[0], "board", task=TASK, trust_key=trusted,
                 model_dir=str(fleet.tmp / "models-board"))
    fleet.client(port, dirs[1], "sensor", task=TASK, trust_key=trusted,
                 model_dir=str(fleet.tmp / "models-sensor"), device_class="tiny")
    server.wait(timeout=240)
    fleet.join_clients(timeout=60)

    manifests = {}
    for device in ("board", "sensor"):
        current = ModelDir(fleet.tmp / f"models-{device}").current()
        assert current is not None, f"{device} installed nothing"
        manifests[device] = json.loads((current / "manifest.json").read_text())
    assert manifests["board"]["device_class"] == "board"
    assert manifests["sensor"]["device_class"] == "tiny"
    # Two different students: the board's has 3,610 parameters, the tiny one 1,810.
    assert manifests["board"]["model"]["parameters"] == 3610
    assert manifests["sensor"]["model"]["parameters"] == 1810
    assert manifests["board"]["model"]["sha256"] != manifests["sensor"]["model"]["sha256"]
    classes = {d.device_id: d.device_class for d in server.registry.all()}
    assert classes == {"board": "board", "sensor": "tiny"}
    assert (fleet.tmp / "state" / "edge" / "board" / "round-000001").is_dir()
    assert (fleet.tmp / "state" / "edge" / "tiny" / "round-000001").is_dir()


def test_a_label_the_task_does_not_define_is_refused_at_join(fleet: Fleet) -> None:
    dirs = fleet.partitions("digits-mlp", 1)
    server = fleet.server(task=TASK, rounds=1, min_clients=1, edge=True)
    port = server.start()
    client = fleet.client(port, dirs[0], "odd", task=TASK, device_class="phone",
                          trust_key=str(fleet.tmp / "state" / PUBLIC_FILE))
    client.thread.join(30)
    assert not client.thread.is_alive()
    assert len(client.errors) == 1 and isinstance(client.errors[0], FedgeError)
    assert "device class 'phone' is not one of the task's: board, tiny" in str(
        client.errors[0])
    fleet.clients.remove(client)
