"""Each reader on real files written in the test: CSV, .npz, .npy pairs, JSON Lines,
PNG and JPEG folders; formats told from content, labels by name or index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.client.data import LocalData, ReadOptions, inspect_sources, load_local_data
from fedge.client.data.detect import sniff
from tests.client.data_files import (
    CNN_SCHEMA,
    SCHEMA,
    examples,
    needs_pillow,
    write_csv,
    write_images,
    write_jsonl,
)


def _read(path: Path, schema=SCHEMA, options: ReadOptions | None = None):
    data = LocalData([str(path)], schema, options)
    data.rescan()
    x, y = data.arrays(by_content=False)
    return x, y, data.inventory()


def test_csv_with_label_names_or_indices_reads_exactly(tmp_path: Path) -> None:
    x, y = examples(30)
    names = [SCHEMA.labels[k] for k in y]
    write_csv(tmp_path / "a-by-name.csv", x[:15], names[:15])
    write_csv(tmp_path / "b-by-index.csv", x[15:], [str(k) for k in y[15:]])
    got_x, got_y, inventory = _read(tmp_path)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert got_x.dtype == np.float32 and got_y.dtype == np.int64
    assert inventory.files == 2 and inventory.records == 30 and inventory.records_skipped == 0


def test_csv_label_column_anywhere_and_other_delimiters(tmp_path: Path) -> None:
    x, y = examples(5)
    header = ";".join(["kind"] + [f"p{i}" for i in range(16)])
    rows = [";".join([SCHEMA.labels[k]] + [f"{v:.9g}" for v in row]) for row, k in
            zip(x, y, strict=True)]
    (tmp_path / "semi.txt").write_text("\n".join([header, *rows]) + "\n")
    got_x, got_y, _ = _read(tmp_path / "semi.txt", options=ReadOptions(label_column="kind"))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_csv_streams_in_batches_across_batch_boundaries(tmp_path: Path) -> None:
    x, y = examples(1000)
    write_csv(tmp_path / "big.csv", x, y.tolist(), extra=["1,2"])
    got_x, got_y, inventory = _read(tmp_path, options=ReadOptions(batch_rows=64))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert inventory.records_skipped == 1


def test_npz_with_mapped_names_and_shaped_inputs(tmp_path: Path) -> None:
    x, y = examples(20)
    np.savez(tmp_path / "a.npz", inputs=x.reshape(20, 1, 4, 4), targets=y)
    options = ReadOptions(x_key="inputs", y_key="targets")
    got_x, got_y, _ = _read(tmp_path, options=options)
    np.testing.assert_array_equal(got_x, x)  # (1, 4, 4) flattened to the MLP's (16,)
    np.testing.assert_array_equal(got_y, y)
    got_x, _, _ = _read(tmp_path, CNN_SCHEMA, options)
    assert got_x.shape == (20, 1, 4, 4)


def test_npz_labels_may_be_names(tmp_path: Path) -> None:
    x, y = examples(6)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([SCHEMA.labels[k] for k in y]))
    _, got_y, _ = _read(tmp_path)
    np.testing.assert_array_equal(got_y, y)


def test_npy_pairs_are_memory_mapped_and_batched(tmp_path: Path) -> None:
    x, y = examples(100)
    np.save(tmp_path / "train_x.npy", x)
    np.save(tmp_path / "train_y.npy", y)
    np.save(tmp_path / "x.npy", x[:10])
    np.save(tmp_path / "y.npy", y[:10])
    got_x, got_y, inventory = _read(tmp_path, options=ReadOptions(batch_rows=7))
    np.testing.assert_array_equal(got_x, np.concatenate([x, x[:10]]))
    np.testing.assert_array_equal(got_y, np.concatenate([y, y[:10]]))
    # A pair is one file to read; the labels file is not counted on its own.
    assert inventory.files == 2 and dict(inventory.sources[0].formats) == {"npy": 2}


def test_jsonl_reads_names_indices_and_nested_inputs(tmp_path: Path) -> None:
    x, y = examples(9)
    labels: list[object] = [SCHEMA.labels[k] if i % 2 else int(k) for i, k in enumerate(y)]
    write_jsonl(tmp_path / "a.jsonl", x, labels,
                extra=[b'{"x": ' + str(x[0].reshape(4, 4).tolist()).encode() + b', "y": 0}'])
    got_x, got_y, _ = _read(tmp_path)
    np.testing.assert_array_equal(got_x, np.concatenate([x, x[:1]]))
    np.testing.assert_array_equal(got_y, np.concatenate([y, [0]]))


@needs_pillow
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_folders_label_by_folder_and_convert_to_the_schema(tmp_path: Path,
                                                                 fmt: str) -> None:
    x, y = examples(12)
    write_images(tmp_path / "photos", x, y, fmt)
    got_x, got_y, inventory = _read(tmp_path)
    order = np.argsort([f"{SCHEMA.labels[k]}/img-{i:03d}" for i, k in enumerate(y)])
    np.testing.assert_array_equal(got_y, y[order])
    if fmt == "PNG":  # lossless
        np.testing.assert_array_equal(got_x, x[order])
    else:  # JPEG is lossy, but close
        assert np.abs(got_x - x[order]).mean() < 0.15
    assert inventory.files == 12 and dict(inventory.sources[0].formats) == {"image": 12}


@needs_pillow
def test_images_are_resized_and_converted_from_colour(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "owl").mkdir()
    Image.new("RGB", (32, 20), (255, 255, 255)).save(tmp_path / "owl" / "big.png")
    got_x, got_y, _ = _read(tmp_path)
    assert got_x.shape == (1, 16) and got_y.tolist() == [2]
    np.testing.assert_allclose(got_x, 1.0)
    got_x, _, _ = _read(tmp_path, CNN_SCHEMA)  # image size inferred from (1, 4, 4)
    assert got_x.shape == (1, 1, 4, 4)


@needs_pillow
def test_formats_are_told_from_content_not_extension(tmp_path: Path) -> None:
    x, y = examples(4)
    write_csv(tmp_path / "export.dat", x, y.tolist())
    with (tmp_path / "archive.bin").open("wb") as f:  # a name np.savez would not add .npz to
        np.savez(f, x=x, y=y)
    write_jsonl(tmp_path / "log.txt", x, y.tolist())
    write_images(tmp_path / "img", x[:1], y[:1])
    png = next((tmp_path / "img").rglob("*.png"))
    png.rename(png.with_suffix(""))
    assert sniff(tmp_path / "export.dat") == "csv"
    assert sniff(tmp_path / "archive.bin") == "npz"
    assert sniff(tmp_path / "log.txt") == "jsonl"
    assert sniff(png.with_suffix("")) == "image"
    got_x, _, inventory = _read(tmp_path)
    assert len(got_x) == 13 and inventory.files_skipped == 0


def test_sources_can_be_files_directories_and_globs(tmp_path: Path) -> None:
    x, y = examples(10)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_csv(tmp_path / "a" / "one.csv", x[:3], y[:3].tolist())
    write_csv(tmp_path / "a" / "two.csv", x[3:6], y[3:6].tolist())
    np.savez(tmp_path / "b" / "c.npz", x=x[6:], y=y[6:])
    (tmp_path / "b" / ".partial.npz").write_bytes(b"PK\x03\x04 half written")
    sources = [str(tmp_path / "a" / "one.csv"), str(tmp_path / "b"),
               str(tmp_path / "a" / "t*.csv")]
    got_x, got_y = load_local_data(sources, SCHEMA)
    np.testing.assert_array_equal(got_x, np.concatenate([x[:3], x[6:], x[3:6]]))
    np.testing.assert_array_equal(got_y, np.concatenate([y[:3], y[6:], y[3:6]]))
    inventory = inspect_sources(sources, SCHEMA)
    assert [s.records for s in inventory.sources] == [3, 4, 3]
    assert inventory.files_skipped == 0  # hidden files are not data
    # A file that two sources name is read once, for the first.
    overlapping = [str(tmp_path / "a"), str(tmp_path / "a" / "*.csv")]
    assert len(load_local_data(overlapping, SCHEMA)[1]) == 6
    assert [s.records for s in inspect_sources(overlapping, SCHEMA).sources] == [6, 0]


def test_training_order_does_not_depend_on_the_file_layout(tmp_path: Path) -> None:
    x, y = examples(40)
    np.savez(tmp_path / "one.npz", x=x, y=y)
    split = tmp_path / "split"
    split.mkdir()
    write_csv(split / "z.csv", x[::2], y[::2].tolist())
    write_jsonl(split / "a.jsonl", x[1::2], y[1::2].tolist())
    whole = LocalData([str(tmp_path / "one.npz")], SCHEMA)
    parts = LocalData([str(split)], SCHEMA)
    whole.rescan()
    parts.rescan()
    for a, b in zip(whole.arrays(), parts.arrays(), strict=True):
        np.testing.assert_array_equal(a, b)
