"""The realistic built-in tasks read their public data sets in the published formats
(a tiny file set written here in each format is read back exactly), fall back to a
deterministic synthetic set of the task's shapes, and refuse a bad directory."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.errors import TaskError
from fedge.tasks import Task, activity, cifar10, keywords, load_task

TASKS = ("cifar10-resnet", "keywords-cnn", "har-cnn")


def _n(labels: np.ndarray | None) -> int:
    assert labels is not None
    return len(labels)


def _n_list(labels: np.ndarray | None) -> list[int]:
    assert labels is not None
    return [int(v) for v in labels]


@pytest.mark.parametrize("name", TASKS)
def test_synthetic_sets_fit_the_schema_and_the_models(name: str) -> None:
    task = load_task(name)
    splits = task.load_data()
    for x, y, where in [(splits.train_x, splits.train_y, "train"),
                        (splits.test_x, splits.test_y, "test"),
                        (splits.proxy_x, splits.proxy_y, "proxy")]:
        assert x is not None and y is not None and len(y) > 0
        task.schema.check(x, y, where)
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert set(np.unique(y)) == set(range(task.schema.num_classes))  # every class
    assert task.build_student is not None
    batch = torch.from_numpy(splits.test_x[:3])
    for build in (task.build_model, task.build_student):
        with torch.no_grad():
            assert tuple(build()(batch).shape) == (3, task.schema.num_classes)


@pytest.mark.parametrize("module", [cifar10, keywords, activity])
def test_synthetic_sets_are_the_same_every_time(module: object) -> None:
    first, second = module.synthetic(), module.synthetic()  # type: ignore[attr-defined]
    np.testing.assert_array_equal(first.train_x, second.train_x)
    np.testing.assert_array_equal(first.test_y, second.test_y)


def _write_cifar(directory: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    records = {}
    for name in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE):
        rec = rng.integers(0, 256, (4, cifar10.RECORD_BYTES), dtype=np.uint8)
        rec[:, 0] = rng.integers(0, 10, 4)
        rec.tofile(directory / name)
        records[name] = rec
    return records


def test_cifar10_binary_version_reads_back(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    records = _write_cifar(tmp_path, np.random.default_rng(1))
    x, y = cifar10.read_batch(tmp_path / "test_batch.bin")
    rec = records["test_batch.bin"]
    np.testing.assert_array_equal(y, rec[:, 0])
    # The label byte, then 1,024 red, 1,024 green, 1,024 blue bytes, row by row.
    assert x[2, 1, 0, 5] == np.float32(rec[2, 1 + 1024 + 5] / 255.0)
    assert x[3, 2, 31, 31] == np.float32(rec[3, 3072] / 255.0)
    monkeypatch.setenv(cifar10.ENV, str(tmp_path))
    splits = cifar10.load_data()
    assert (len(splits.train_y), _n(splits.proxy_y), len(splits.test_y)) == (18, 2, 4)
    train_labels = np.concatenate([records[n][:, 0] for n in cifar10.TRAIN_FILES])
    assert splits.proxy_y is not None
    assert sorted([*splits.train_y, *splits.proxy_y]) == sorted(train_labels)


def test_cifar10_refuses_the_wrong_files(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(TaskError, match="not a whole number of CIFAR-10 records"):
        cifar10.read_batch(tmp_path / "data_batch_1.bin")
    with pytest.raises(TaskError, match=r"missing data_batch_2\.bin"):
        cifar10.read_cifar10(tmp_path)


def _write_wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())


def test_speech_commands_layout_reads_back(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    clips = {}
    for word in (*keywords.LABELS, "bed"):  # "bed" is not a command word: not read
        for k in range(3):
            pcm = rng.integers(-3000, 3000, 16_000 if k else 9_000)  # one short clip
            _write_wav(tmp_path / word / f"spk{k}_nohash_0.wav", pcm)
            clips[f"{word}/spk{k}_nohash_0.wav"] = pcm
    _write_wav(tmp_path / "_background_noise_" / "white.wav", rng.integers(-99, 99, 32000))
    (tmp_path / "testing_list.txt").write_text(
        "".join(f"{w}/spk1_nohash_0.wav\n" for w in keywords.LABELS))
    (tmp_path / "validation_list.txt").write_text("yes/spk2_nohash_0.wav\n")
    clip = keywords.read_wav(tmp_path / "no" / "spk0_nohash_0.wav")
    expected = np.zeros(16_000, np.float32)
    expected[:9_000] = clips["no/spk0_nohash_0.wav"] / 32768.0
    np.testing.assert_allclose(clip, expected, atol=1e-7)  # padded with silence

    monkeypatch.setenv(keywords.ENV, str(tmp_path))
    splits = keywords.load_data()
    assert (len(splits.train_y), len(splits.test_y), _n(splits.proxy_y)) == (19, 10, 1)
    assert splits.train_x.shape[1:] == keywords.SHAPE
    assert list(splits.test_y) == list(range(10)) and list(_n_list(splits.proxy_y)) == [0]
    first_test = keywords.read_wav(tmp_path / "yes" / "spk1_nohash_0.wav")
    np.testing.assert_allclose(splits.test_x[0], keywords.log_mel(first_test[None])[0])


def test_speech_commands_refuses_a_stereo_clip(tmp_path: Path) -> None:
    path = tmp_path / "yes" / "a.wav"
    path.parent.mkdir()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(16_000)
        f.writeframes(b"\x00" * 400)
    with pytest.raises(TaskError, match="2 channel"):
        keywords.read_wav(path)
    with pytest.raises(TaskError, match=r"missing testing_list\.txt"):
        keywords.read_speech_commands(tmp_path)


def test_log_mel_sees_where_a_tone_is() -> None:
    t = np.arange(16_000) / 16_000
    low, high = np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 3000 * t)
    feats = keywords.log_mel(np.stack([low, high]))
    bands = feats[:, 0].mean(axis=2).argmax(axis=1)  # the loudest mel band
    assert bands[0] < bands[1]


def _write_har(root: Path, split: str, windows: np.ndarray, labels: np.ndarray) -> None:
    signals = root / split / "Inertial Signals"
    signals.mkdir(parents=True)
    for c, name in enumerate(activity.SIGNALS):
        np.savetxt(signals / f"{name}_{split}.txt", windows[:, c], fmt="%.7e")
    for extra in ("body_acc_x",):  # the archive's other signals are not read
        np.savetxt(signals / f"{extra}_{split}.txt", windows[:, 0] * 0, fmt="%.7e")
    np.savetxt(root / split / f"y_{split}.txt", labels + 1, fmt="%d")


def test_uci_har_layout_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(0, 1, (10, 6, 128)).astype(np.float32)
    test = rng.normal(0, 1, (4, 6, 128)).astype(np.float32)
    train_y, test_y = np.arange(10) % 6, np.array([5, 4, 3, 0])
    _write_har(tmp_path, "train", train, train_y)
    _write_har(tmp_path, "test", test, test_y)
    x, y = activity.read_split(tmp_path, "test")
    np.testing.assert_allclose(x, test, rtol=1e-6)
    np.testing.assert_array_equal(y, test_y)
    monkeypatch.setenv(activity.ENV, str(tmp_path))
    splits = activity.load_data()
    assert (len(splits.train_y), _n(splits.proxy_y), len(splits.test_y)) == (9, 1, 4)


def test_uci_har_refuses_a_short_window(tmp_path: Path) -> None:
    _write_har(tmp_path, "train", np.zeros((2, 6, 100), np.float32), np.array([0, 1]))
    with pytest.raises(TaskError, match="100 numbers a line, expected 128"):
        activity.read_split(tmp_path, "train")


@pytest.mark.parametrize("name", TASKS)
def test_a_data_variable_naming_no_directory_is_a_mistake(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task: Task = load_task(name)
    env = {"cifar10-resnet": cifar10.ENV, "keywords-cnn": keywords.ENV,
           "har-cnn": activity.ENV}[name]
    monkeypatch.setenv(env, str(tmp_path / "absent"))
    with pytest.raises(TaskError, match=f"{env}=.*no such directory"):
        task.load_data()
