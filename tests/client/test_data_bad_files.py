"""Every kind of bad file or record is skipped with a counted reason and a log line;
the good data beside it is still read, and nothing raises."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from fedge.client.data import LocalData, inspect_sources, load_local_data
from fedge.client.data.schema import LOGGED_PER_FILE
from fedge.errors import DataError
from fedge.tasks import DataSchema
from tests.client.data_files import (
    SCHEMA,
    examples,
    needs_pillow,
    write_csv,
    write_images,
    write_jsonl,
)

GOOD = 6


def _scan(tmp_path: Path, schema: DataSchema = SCHEMA):
    """Scans tmp_path beside a good file of GOOD examples; returns the inventory."""
    x, y = examples(GOOD)
    np.savez(tmp_path / "good.npz", x=x, y=y)
    data = LocalData([str(tmp_path)], schema)
    data.rescan()
    inventory = data.inventory()
    assert inventory.records - GOOD == len(data.arrays()[1]) - GOOD
    return inventory


def _file_skips(inventory) -> dict[str, int]:
    return dict(inventory.sources[0].files_skipped)


def _record_skips(inventory) -> dict[str, int]:
    return dict(inventory.sources[0].records_skipped)


def test_bad_csv_records_are_skipped_one_by_one(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    x, y = examples(4)
    row = ",".join(["0.5"] * 16)
    write_csv(tmp_path / "a.csv", x, y.tolist(), extra=[
        "0.1,0.2,0.3",                       # wrong width
        row + ",unicorn",                    # unknown label
        row.replace("0.5", "abc", 1) + ",cat",  # not a number
        row.replace("0.5", "nan", 1) + ",dog",  # NaN
        row.replace("0.5", "inf", 1) + ",dog",  # infinite
        ",".join(["0.5"] * 15 + ["0.5,0.5"]),  # truncated mid-row: no label
    ])
    with (tmp_path / "a.csv").open("ab") as f:
        f.write(row.encode() + b",\xffcat\n")  # bad encoding
        f.write(("0.7," * 15).encode() + b"0.\xe9,owl\n")  # bad encoding in a value
    with caplog.at_level(logging.WARNING):
        inventory = _scan(tmp_path)
    assert inventory.records == GOOD + 4
    assert _record_skips(inventory) == {"wrong width": 1, "unknown label": 2,
                                        "not a number": 1, "NaN or infinite": 2,
                                        "bad encoding": 2}
    lines = [r.getMessage() for r in caplog.records if "a.csv" in r.getMessage()]
    assert len([m for m in lines if "skipped 1 record" in m]) == LOGGED_PER_FILE
    assert all("\n" not in m for m in lines)


def test_nan_is_kept_when_the_schema_allows_it(tmp_path: Path) -> None:
    row = ",".join(["nan"] * 16)
    write_csv(tmp_path / "a.csv", np.zeros((0, 16)), [], extra=[row + ",cat"])
    schema = DataSchema(input_shape=(16,), labels=SCHEMA.labels, allow_nan=True)
    assert _scan(tmp_path, schema).records == GOOD + 1


def test_bad_json_lines_are_skipped_one_by_one(tmp_path: Path) -> None:
    x, y = examples(3)
    write_jsonl(tmp_path / "a.jsonl", x, y.tolist(), extra=[
        b'{"x": [1, 2], "y": 0}',              # wrong width
        b'{"x": ' + str([0.5] * 16).encode() + b', "y": 7}',  # unknown label
        b'{"x": "pixels", "y": 0}',            # not a number
        b'{"y": 0}',                           # missing field
        b'[1, 2, 3]',                          # not an object
        b'{"x": [0.1, \xff], "y": 0}',         # bad encoding
        b'{"x": [0.1, 0.2',                    # truncated
    ])
    inventory = _scan(tmp_path)
    assert inventory.records == GOOD + 3
    assert _record_skips(inventory) == {"wrong width": 1, "unknown label": 1,
                                        "not a number": 1, "missing field": 2,
                                        "bad encoding": 1, "not JSON": 1}


@needs_pillow
def test_whole_bad_files_are_skipped_with_their_reason(tmp_path: Path) -> None:
    x, y = examples(10)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n\n  \n")
    write_csv(tmp_path / "header-only.csv", x[:0], [])
    write_csv(tmp_path / "no-label.csv", x, y.tolist(),
              header=",".join(f"f{i}" for i in range(17)))
    write_csv(tmp_path / "narrow.csv", x[:, :8], y.tolist())
    archive = io.BytesIO()
    np.savez(archive, x=x, y=y)
    (tmp_path / "cut.npz").write_bytes(archive.getvalue()[:300])
    np.savez(tmp_path / "names.npz", inputs=x, y=y)
    np.savez(tmp_path / "float-labels.npz", x=x, y=y.astype(np.float32))
    np.savez(tmp_path / "shape.npz", x=x.reshape(10, 2, 8, 1)[:, :, :5], y=y)
    np.save(tmp_path / "lonely_x.npy", x)
    np.save(tmp_path / "cut_x.npy", x)
    np.save(tmp_path / "cut_y.npy", y)
    whole = (tmp_path / "cut_x.npy").read_bytes()
    (tmp_path / "cut_x.npy").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "random.bin").write_bytes(b"\x00\x07garbage" * 10)
    (tmp_path / "readme").write_text("just some notes\n")
    write_images(tmp_path / "img", x[:2], y[:2])
    (tmp_path / "img" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good_png = next((tmp_path / "img" / "dog").glob("*.png")).read_bytes()
    (tmp_path / "img" / "cat" / "cut.png").write_bytes(good_png[:40])
    (tmp_path / "img" / "zebra").mkdir()
    (tmp_path / "img" / "zebra" / "z.png").write_bytes(good_png)

    inventory = _scan(tmp_path)
    assert inventory.records == GOOD + 2  # the good archive and the two good images
    assert _file_skips(inventory) == {
        "empty file": 3, "no label column": 1, "wrong width": 1, "truncated or corrupt": 2,
        "missing array": 1, "labels not integers": 1, "wrong shape": 1, "unpaired .npy": 1,
        "unknown format": 2, "unreadable image": 2, "unknown label": 1}


@needs_pillow
def test_without_pillow_images_are_skipped_with_a_reason_that_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    x, y = examples(3)
    write_images(tmp_path / "img", x, y)
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with caplog.at_level(logging.WARNING):
        inventory = _scan(tmp_path)
    assert _file_skips(inventory) == {"Pillow not installed": 3}
    assert "pip install 'fedge[data]'" in caplog.text


def test_missing_sources_and_no_usable_data(tmp_path: Path) -> None:
    inventory = inspect_sources([str(tmp_path / "nowhere")], SCHEMA)
    assert inventory.records == 0 and inventory.sources[0].files == 0
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"no usable examples.*1 file"):
        load_local_data([str(tmp_path)], SCHEMA)


def test_an_unreadable_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "gone.csv")
    inventory = inspect_sources([str(tmp_path)], SCHEMA)
    assert dict(inventory.sources[0].files_skipped) == {"unreadable file": 1}
