"""The manifest describes raw inputs as data: a runtime that knows nothing of fedge
prepares raw inputs from it and predicts what `fedge edge predict --raw` predicts, and
the device's image reader trains on the same preparation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedge.client.data.images import read_image
from fedge.client.data.schema import ReadOptions, RecordChecker, RecordLog
from fedge.edge.runtime.inputs import prepare
from fedge.tasks import DataSchema
from tests.edge.conftest import Built
from tests.processes import FEDGE

# A runtime written from the manifest's documentation alone: numpy and onnxruntime, no
# fedge import. It applies the steps itself.
OTHER_RUNTIME = r'''
import json, sys
import numpy as np
import onnxruntime as ort

artifact, raw_file = sys.argv[1], sys.argv[2]
manifest = json.load(open(f"{artifact}/manifest.json"))
spec = manifest["input"]["preprocessing"]
x = np.load(raw_file).astype(np.float64)
low, high = spec["raw"]["range"]
assert x.min() >= low and x.max() <= high, "raw values outside the manifest's range"
for step in spec["steps"]:
    if step["op"] == "scale":
        x = x * step["factor"]
    elif step["op"] == "normalize":
        x = (x - np.array(step["mean"])) / np.array(step["std"])
    elif step["op"] == "transpose":
        x = np.transpose(x, [0] + [a + 1 for a in step["axes"]])
    elif step["op"] == "reshape":
        x = x.reshape([len(x)] + step["shape"])
    elif step["op"] == "cast":
        x = x.astype(step["dtype"])
    else:
        raise SystemExit(f"unknown step {step['op']}")
session = ort.InferenceSession(f"{artifact}/model.onnx", providers=["CPUExecutionProvider"])
scores = session.run(None, {manifest["input"]["name"]: x})[0]
labels = manifest["output"]["labels"]
print("\n".join(labels[i] for i in scores.argmax(axis=1)))
assert not [m for m in sys.modules if m.split(".")[0] == "fedge"]
'''


def raw_digits(built: Built, n: int = 64) -> np.ndarray:
    """The test split as the raw 8x8 images a camera would give: 4-bit intensities."""
    raw = np.rint(built.splits.test_x[:n] * 16).reshape(-1, 8, 8)
    return raw.astype(np.uint8)


def test_the_manifest_describes_raw_inputs_as_data(built: Built) -> None:
    manifest = json.loads((built.artifact / "manifest.json").read_text())
    spec = manifest["input"]["preprocessing"]
    assert spec["raw"] == {"kind": "image", "mode": "L", "height": 8, "width": 8,
                           "layout": "HW", "dtype": "uint8", "range": [0.0, 16.0]}
    assert [s["op"] for s in spec["steps"]] == ["scale", "reshape", "cast"]
    assert spec["steps"][0]["factor"] == 1 / 16


def test_a_runtime_without_fedge_predicts_what_fedge_predicts(built: Built,
                                                              tmp_path: Path) -> None:
    raw = raw_digits(built)
    np.save(tmp_path / "raw.npy", raw)
    (tmp_path / "other.py").write_text(OTHER_RUNTIME)
    assert "fedge" not in OTHER_RUNTIME.replace('"fedge"', "")
    other = subprocess.run([sys.executable, "-I", str(tmp_path / "other.py"),
                            str(built.artifact), str(tmp_path / "raw.npy")],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    ours = subprocess.run([*FEDGE, "edge", "predict", str(built.artifact),
                           str(tmp_path / "raw.npy"), "--raw"],
                          capture_output=True, text=True, timeout=120)
    assert ours.returncode == 0, ours.stderr
    assert other.stdout.split() == ours.stdout.split()
    # ... and what the model predicts on the prepared test split, so both are right.
    prepared = np.load(tmp_path / "raw.npy")
    np.save(tmp_path / "prepared.npy", built.splits.test_x[:len(prepared)])
    plain = subprocess.run([*FEDGE, "edge", "predict", str(built.artifact),
                            str(tmp_path / "prepared.npy")],
                           capture_output=True, text=True, timeout=120)
    assert plain.stdout.split() == ours.stdout.split()
    accuracy = np.mean([int(p) == int(y) for p, y in zip(ours.stdout.split(),
                                                        built.splits.test_y, strict=False)])
    assert accuracy > 0.8


def test_image_files_are_prepared_as_the_device_trained_on_them(built: Built,
                                                                tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    raw = raw_digits(built, 8)
    paths = []
    for i, pixels in enumerate(raw):
        folder = tmp_path / str(int(built.splits.test_y[i]))
        folder.mkdir(exist_ok=True)
        paths.append(folder / f"img-{i}.png")
        image.fromarray(pixels, mode="L").save(paths[-1])
    files = subprocess.run([*FEDGE, "edge", "predict", str(built.artifact),
                            *map(str, paths)], capture_output=True, text=True, timeout=120)
    np.save(tmp_path / "raw.npy", raw)
    arrays = subprocess.run([*FEDGE, "edge", "predict", str(built.artifact),
                             str(tmp_path / "raw.npy"), "--raw"],
                            capture_output=True, text=True, timeout=120)
    assert files.returncode == 0, files.stderr
    assert files.stdout.split() == arrays.stdout.split()
    # The device's reader gives the model the same numbers from the same file.
    schema = built.task.schema
    checker = RecordChecker(schema)
    read = np.concatenate([next(iter(read_image(p, checker, ReadOptions(), RecordLog(str(p)))))[0]
                           for p in paths])
    np.testing.assert_array_equal(read, prepare(raw, schema.preprocessing()))
    np.testing.assert_array_equal(read, built.splits.test_x[:8])


def test_colour_images_are_normalized_per_channel_then_laid_out_channels_first() -> None:
    schema = DataSchema(input_shape=(3, 4, 5), labels=("a", "b"), image_mode="RGB",
                        normalize=((0.5, 0.4, 0.3), (0.2, 0.25, 0.5)))
    spec = schema.preprocessing()
    assert spec["raw"]["layout"] == "HWC" and spec["raw"]["height"] == 4
    raw = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    x = prepare(raw, spec)
    expected = ((raw / 255.0 - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.5]).transpose(0, 3, 1, 2)
    assert x.dtype == np.float32 and x.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(x, expected.astype(np.float32), rtol=1e-6)
    # A task whose inputs are not images (sensor windows, audio features) is fed as the
    # tensor it is; the device's reader can still read images into such a shape.
    for sensors in (DataSchema(input_shape=(6, 128), labels=("a",)),
                    DataSchema(input_shape=(1, 40, 98), labels=("a",), raw_kind="tensor")):
        assert sensors.preprocessing() == {
            "raw": {"kind": "tensor", "shape": list(sensors.input_shape), "dtype": "float32"},
            "steps": [{"op": "cast", "dtype": "float32"}]}
    assert DataSchema(input_shape=(6, 128), labels=("a",)).image_preprocessing()[
        "raw"]["kind"] == "image"


def test_each_builtin_task_describes_its_raw_inputs() -> None:
    from fedge.tasks import builtin_tasks

    kinds = {name: make().schema.preprocessing()["raw"]["kind"]
             for name, make in builtin_tasks().items()}
    # Camera tasks take images; the microphone's log-mel features and the IMU's windows
    # are tensors (their raw audio and sensor streams are the task's own business).
    assert kinds == {"digits-mlp": "image", "digits-cnn": "image", "cifar10-resnet": "image",
                     "keywords-cnn": "tensor", "har-cnn": "tensor", "text-lora": "tensor"}
    cifar = builtin_tasks()["cifar10-resnet"]().schema.preprocessing()
    assert cifar["raw"]["mode"] == "RGB" and {"op": "transpose", "axes": [2, 0, 1]} in \
        cifar["steps"]
