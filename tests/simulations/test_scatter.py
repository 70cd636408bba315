"""Scattered partitions: mixed formats and planted corrupt files that the real readers
read back to exactly the client's share; `fedge simulate --scatter` trains as well as
the plain run and counts what each client skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedge.cli import main
from fedge.client.data import LocalData
from fedge.config import SimulateConfig
from fedge.simulations.partition import iid
from fedge.simulations.runner import simulate
from fedge.simulations.scatter import write_scatter, write_scatters
from fedge.tasks import DataSchema, load_task
from tests.client.data_files import needs_pillow


@needs_pillow
def test_a_scatter_reads_back_to_exactly_the_share(tmp_path: Path) -> None:
    task = load_task("digits-cnn")
    splits = task.load_data()
    x, y = splits.train_x[:200], splits.train_y[:200]
    scatter = write_scatter(x, y, task.schema, tmp_path / "client", seed=3)
    formats = {p.suffix for p in (tmp_path / "client").rglob("*") if p.is_file()}
    assert formats >= {".csv", ".npz", ".jsonl", ".png"}
    data = LocalData([str(scatter.directory)], task.schema)
    data.rescan()
    got_x, got_y = data.arrays()
    assert got_x.shape == (200, 1, 8, 8)
    order = np.lexsort(np.c_[x.reshape(200, -1), y].T)
    got = np.lexsort(np.c_[got_x.reshape(200, -1), got_y].T)
    np.testing.assert_array_equal(got_x[got], x[order])
    np.testing.assert_array_equal(got_y[got], y[order])
    inventory = data.inventory()
    assert inventory.files_skipped == scatter.corrupt_files == 4
    assert inventory.records_skipped == scatter.bad_records


def test_data_that_are_not_images_scatter_without_pngs(tmp_path: Path) -> None:
    schema = DataSchema(input_shape=(5,), labels=("a", "b"))
    x = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    y = np.arange(30) % 2
    (scatter,) = write_scatters(x, y, [np.arange(30)], schema, tmp_path)
    assert not list(tmp_path.rglob("*.png")) and scatter.corrupt_files == 3
    data = LocalData([str(scatter.directory)], schema)
    data.rescan()
    assert data.inventory().records == 30 and data.inventory().files_skipped == 3


@needs_pillow
def test_fedge_data_partition_scatter_then_inspect(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "partition", "--clients", "2", "--scatter",
                 "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(tmp_path / "client-0"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    share = len(iid(len(load_task("digits-mlp").load_data().train_y), 2, seed=0)[0])
    assert report["records"] == share and report["files_skipped"] == 4
    (source,) = report["sources"]
    assert source["files_skipped"] == {"empty file": 1, "truncated or corrupt": 1,
                                       "unknown format": 1, "unreadable image": 1}
    assert sum(source["labels"].values()) == share
    assert main(["data", "inspect", str(tmp_path / "client-1"), str(tmp_path / "nowhere")]) == 0
    table = capsys.readouterr().out
    assert "record skipped  1  not JSON" in table and "labels" in table
    assert table.count("source ") == 2


@needs_pillow
@pytest.mark.slow
def test_scatter_simulation_matches_the_plain_run(tmp_path: Path) -> None:
    # No edge artifact: it is built from the final model, whatever the data's files.
    plain = simulate(SimulateConfig(out=str(tmp_path / "plain"), edge=False))
    scattered = simulate(SimulateConfig(out=str(tmp_path / "scatter"), scatter=True,
                                        edge=False))
    assert abs(plain["final"]["accuracy"] - scattered["final"]["accuracy"]) <= 0.01
    assert scattered["final"]["accuracy"] >= 0.93
    assert scattered["scatter"] and not plain["scatter"]
    for client in scattered["client_data"]:
        assert client["files_skipped"] == 4 and client["records_skipped"] == 4
        assert client["examples"] > 240
    assert [c["examples"] for c in plain["client_data"]] == \
        [c["examples"] for c in scattered["client_data"]]
    assert all(c["files_skipped"] == 0 for c in plain["client_data"])
