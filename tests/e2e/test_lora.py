"""LoRA fine-tuning over real gRPC: devices train the adapters of text-lora's transformer,
and the global model, every update and the server's average are the adapters and head
alone (needs the optional peft package)."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.simulations.partition import iid, write_partitions
from fedge.tasks import load_task
from fedge.tasks.lora import parameter_count
from fedge.tensors import from_blob
from tests.fleet import Fleet

pytest.importorskip("peft")


@pytest.mark.slow
def test_a_federated_lora_run_uploads_adapters_only_and_learns(fleet: Fleet) -> None:
    task = load_task("text-lora")
    splits = task.load_data()
    take = np.arange(400)  # 200 sequences a device: quick on a loaded machine
    parts = iid(len(take), 2, seed=0)
    dirs = write_partitions(splits.train_x[take], splits.train_y[take], parts,
                            fleet.tmp / "data")
    server = fleet.server(task="text-lora", rounds=2, min_clients=2, epochs=3)
    port = server.start()
    for k, d in enumerate(dirs):
        fleet.client(port, d, f"dev-{k}", task="text-lora")
    records = server.wait(timeout=240)
    fleet.join_clients()

    state_values, whole_values = parameter_count(task.build_model())
    names = {s.name for s in server.rounds.specs}
    assert names and all(".lora_A." in n or ".lora_B." in n or ".head." in n for n in names)
    assert sum(s.nbytes for s in server.rounds.specs) == 4 * state_values
    # Each round's upload (two devices, every message of the round) against two float32
    # full-model updates: at most 2%.
    for r in records[1:]:
        assert r.clients == 2
        assert r.bytes_up <= 0.02 * 2 * 4 * whole_values, (r.bytes_up, whole_values)
    # The adapters moved (B starts at zero) and the model learned (chance: 0.25).
    final, _ = from_blob((fleet.tmp / "state/checkpoints/round-000002.safetensors")
                         .read_bytes())
    assert any(np.abs(v).max() > 0 for n, v in final.items() if ".lora_B." in n)
    first, last = records[0].accuracy, records[-1].accuracy
    assert first is not None and last is not None  # round 0 and the last: evaluated
    assert last >= 0.5 > first + 0.15, \
        [r.accuracy for r in records]
