"""The user-task example: it loads by ``module:attr``, fits its schema, trains to high
accuracy in a short simulation, and bad task specs fail with a message to act on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.config import SimulateConfig
from fedge.errors import TaskError
from fedge.simulations.runner import simulate
from fedge.tasks import Task, load_task

ROOT = Path(__file__).resolve().parents[2]
SPEC = "examples.custom_task:task"


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_task finds `examples` the way a user does: from the working directory.
    monkeypatch.chdir(ROOT)


def test_example_task_fits_its_schema() -> None:
    task = load_task(SPEC)
    assert isinstance(task, Task)
    schema = task.schema
    splits = task.load_data()
    schema.check(splits.train_x, splits.train_y, "train")
    schema.check(splits.test_x, splits.test_y, "test")
    assert splits.proxy_x is not None and splits.proxy_y is not None
    schema.check(splits.proxy_x, splits.proxy_y, "proxy")
    assert splits.train_x.dtype == np.dtype(schema.input_dtype)

    batch = torch.from_numpy(splits.test_x[:5])
    assert task.build_student is not None
    for build in (task.build_model, task.build_student):
        with torch.no_grad():
            out = build()(batch)
        assert tuple(out.shape) == (5, schema.num_classes)


def test_example_task_data_is_the_same_in_every_process() -> None:
    first, second = load_task(SPEC).load_data(), load_task(SPEC).load_data()
    np.testing.assert_array_equal(first.train_x, second.train_x)
    np.testing.assert_array_equal(first.test_y, second.test_y)


def test_example_task_learns_in_three_rounds(tmp_path: Path) -> None:
    report = simulate(SimulateConfig(task=SPEC, clients=3, rounds=3, out=str(tmp_path)))
    assert report["final"]["accuracy"] >= 0.9
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["task"] == "blobs-mlp"
    assert written["final"] == report["final"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuchmodule:task", "cannot import task module 'nosuchmodule'"),
        ("examples.custom_task:missing", "has no attribute 'missing'"),
        ("examples.custom_task:LABELS", "is a tuple, not a fedge.tasks.Task"),
        ("examples.custom_task:build_model", "is a Sequential, not a fedge.tasks.Task"),
        ("no-such-task", "unknown task 'no-such-task'"),
    ],
)
def test_bad_task_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        load_task(spec)
