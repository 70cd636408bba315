"""`fedge edge build --from-params`: a Flower run's final parameters (saved the way
Flower users save them) become the same signed int8 artifact a fedge server ships, which
verifies and predicts with numpy and onnxruntime alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'fedge[flower]'")

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common import parameters_to_ndarrays as to_arrays
from flwr.server.strategy import FedAvg

from fedge.client.trainer import Trainer
from fedge.flower.params import name_params, read_params
from fedge.tasks import load_task
from fedge.tasks.training import weights_of
from fedge.tensors import spec_of
from tests.processes import FEDGE

# verify and predict in a process where torch, scikit-learn and onnx cannot import.
EDGE_ONLY = """
import sys
for name in ("torch", "sklearn", "onnx"):
    sys.modules[name] = None
from fedge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def flower_final_parameters() -> list[np.ndarray]:
    """Two clients' fits of digits-mlp, aggregated by Flower's FedAvg: what a Flower
    ServerApp ends with (in state_dict order, as every Flower example keeps them)."""
    task = load_task("digits-mlp")
    splits = task.load_data()
    halves = np.array_split(np.arange(len(splits.train_y)), 2)
    start = weights_of(task.build_model())
    results: list[tuple[Any, FitRes]] = []
    for part in halves:
        trainer = Trainer(task, splits.train_x[part], splits.train_y[part], "cpu")
        new, _ = trainer.train(start, epochs=5, lr=0.1, batch_size=32, seed=0)
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(list(new.values())),
                     len(part), {})
        results.append((None, res))
    parameters, _ = FedAvg().aggregate_fit(1, results, [])
    assert parameters is not None
    return to_arrays(parameters)


@pytest.mark.slow
def test_an_artifact_from_flower_parameters_verifies_and_predicts(tmp_path: Path) -> None:
    params = flower_final_parameters()
    np.savez(tmp_path / "final.npz", *params)  # Flower's docs save them this way
    build = subprocess.run([*FEDGE, "edge", "build", "--from-params", "final.npz", "--task",
                            "digits-mlp", "--state-dir", "keys", "--out", "artifact"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    test_x = load_task("digits-mlp").load_data().test_x[:20]
    test_y = load_task("digits-mlp").load_data().test_y[:20]
    np.save(tmp_path / "x.npy", test_x)
    edge = [sys.executable, "-c", EDGE_ONLY, "edge"]
    verify = subprocess.run([*edge, "verify", "artifact", "--public-key",
                             "keys/edge-public-key.pem"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "OK, task digits-mlp" in verify.stdout
    predict = subprocess.run([*edge, "predict", "artifact", "x.npy", "--public-key",
                              "keys/edge-public-key.pem"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert predict.returncode == 0, predict.stdout + predict.stderr
    labels = [int(s) for s in predict.stdout.split()]
    assert len(labels) == 20
    assert np.mean(np.array(labels) == test_y) > 0.7  # the distilled student learned


def test_saved_parameters_are_named_by_the_tasks_state_dict_order(tmp_path: Path) -> None:
    task = load_task("digits-mlp")
    weights = weights_of(task.build_model())
    specs = [spec_of(n, a) for n, a in weights.items()]
    np.savez(tmp_path / "list.npz", *weights.values())
    np.savez(tmp_path / "named.npz", **weights)  # type: ignore[arg-type]
    for name in ("list.npz", "named.npz"):
        named = name_params(read_params(tmp_path / name), specs)
        assert list(named) == list(weights)
        for k in weights:
            np.testing.assert_array_equal(named[k], weights[k])
    # A list in another order (fingerprint's sorted order, say) is refused, not misread.
    reordered = [weights[k] for k in sorted(weights)]
    if [a.shape for a in reordered] != [a.shape for a in weights.values()]:
        with pytest.raises(Exception, match="state_dict order"):
            name_params(reordered, specs)
