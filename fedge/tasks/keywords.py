"""Keyword spotting on Speech Commands-shaped data: one-second 16 kHz clips of ten
command words, as log-mel spectrograms (40 mel bands x 101 frames of 10 ms).

The data set is read from ``$FEDGE_SPEECH_COMMANDS_DIR``, the extracted Speech Commands
archive (v0.02: http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz; v0.01
has the same layout):

- one folder per word (``yes/``, ``no/``, ...) of 16-bit mono 16 kHz ``.wav`` clips of
  at most one second (shorter ones are padded with silence);
- ``validation_list.txt`` and ``testing_list.txt``: the clips of the validation and test
  splits, one ``word/file.wav`` path per line; every other clip is training data.

Only the ten command words are read (the other words and ``_background_noise_`` are
not). The test split is the server's test set, the validation split its proxy set.
Clips are read with the standard library's ``wave`` and turned into features with torch
(:func:`log_mel`); a device holds the same features (``.npz``/``.npy``) to train.
Without the variable the task uses a deterministic synthetic set (:func:`synthetic`).
"""

from __future__ import annotations

import wave
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedge.errors import TaskError
from fedge.tasks import DataSchema, Splits, Task, TrainDefaults
from fedge.tasks.sources import dataset_dir

if TYPE_CHECKING:
    from torch import nn

LABELS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ENV = "FEDGE_SPEECH_COMMANDS_DIR"
RATE = 16_000  # samples per second, and samples per clip
N_FFT, WINDOW, HOP, MELS = 512, 480, 160, 40  # 30 ms windows every 10 ms, FFT of 512
FRAMES = 1 + RATE // HOP
SHAPE = (1, MELS, FRAMES)


def mel_filters(n_fft: int = N_FFT, mels: int = MELS, rate: int = RATE) -> np.ndarray:
    """Triangular HTK mel filters, (mels, n_fft // 2 + 1), from 20 Hz to rate / 2."""
    def to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    edges_mel = np.linspace(to_mel(np.array(20.0)), to_mel(np.array(rate / 2)), mels + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    low, mid, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - low) / (mid - low)
    falling = (high - bins[None]) / (high - mid)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(clips: np.ndarray, chunk: int = 512) -> np.ndarray:
    """(N, 16000) float waveforms in -1..1 -> (N, 1, 40, 101) float32 log-mel energies,
    each clip's mean taken away (so loudness does not decide the class)."""
    import torch

    filters = torch.from_numpy(mel_filters())
    window = torch.hann_window(WINDOW)
    out = np.empty((len(clips), *SHAPE), np.float32)
    for start in range(0, len(clips), chunk):  # bounded memory on 100k clips
        wave_ = torch.from_numpy(np.ascontiguousarray(clips[start:start + chunk],
                                                      dtype=np.float32))
        spec = torch.view_as_real(torch.stft(wave_, N_FFT, HOP, WINDOW, window=window,
                                             return_complex=True)).square().sum(-1)
        feats = torch.log(filters @ spec + 1e-6)
        feats -= feats.mean(dim=(1, 2), keepdim=True)
        out[start:start + chunk, 0] = feats.numpy()
    return out


def read_wav(path: Path) -> np.ndarray:
    """One clip as 16000 float32 samples in -1..1 (zero-padded, or cut at one second)."""
    try:
        with wave.open(str(path), "rb") as f:
            if (f.getnchannels(), f.getsampwidth(), f.getframerate()) != (1, 2, RATE):
                raise TaskError(f"{path}: {f.getnchannels()} channel(s), "
                                f"{8 * f.getsampwidth()}-bit, {f.getframerate()} Hz; "
                                "Speech Commands clips are mono 16-bit 16 kHz")
            pcm = np.frombuffer(f.readframes(RATE), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise TaskError(f"{path}: not a readable WAV file ({exc})") from exc
    clip = np.zeros(RATE, np.float32)
    clip[:len(pcm)] = pcm.astype(np.float32) / 32768.0
    return clip


def _listed(directory: Path, name: str) -> set[str]:
    path = directory / name
    if not path.is_file():
        raise TaskError(f"{directory}: missing {name} (expected an extracted Speech "
                        "Commands archive)")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def read_speech_commands(directory: Path) -> Splits:
    """The ten command words of an extracted Speech Commands folder as Splits of log-mel
    features (test: testing_list.txt; proxy: validation_list.txt; train: the rest)."""
    testing, validation = _listed(directory, "testing_list.txt"), _listed(
        directory, "validation_list.txt")
    found: dict[str, tuple[list[np.ndarray], list[int]]] = {
        "train": ([], []), "test": ([], []), "proxy": ([], [])}
    for label, word in enumerate(LABELS):
        folder = directory / word
        if not folder.is_dir():
            raise TaskError(f"{directory}: no folder {word}/ of the word's clips")
        for path in sorted(folder.glob("*.wav")):
            rel = f"{word}/{path.name}"
            part = "test" if rel in testing else "proxy" if rel in validation else "train"
            found[part][0].append(read_wav(path))
            found[part][1].append(label)
    arrays = []
    for part in ("train", "test", "proxy"):
        clips, labels = found[part]
        if not clips:
            raise TaskError(f"{directory}: no {part} clips of the ten command words")
        arrays += [log_mel(np.stack(clips)), np.array(labels, np.int64)]
    return Splits(*arrays)


def synthetic(n_train: int = 600, n_test: int = 150, n_proxy: int = 80,
              seed: int = 0) -> Splits:
    """A deterministic Speech Commands-shaped set with a learnable signal, through the
    same features as real clips: each word is a pair of tones gliding between
    word-specific pitches, spoken at a random time, speed and loudness, in noise."""
    rng = np.random.default_rng(seed)
    pitches = rng.uniform(200.0, 3000.0, (len(LABELS), 2, 2))  # word, tone, start/end

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % len(LABELS)
        rng.shuffle(y)
        clips = rng.normal(0.0, 0.02, (n, RATE)).astype(np.float32)
        for i in range(n):
            length = int(rng.uniform(0.4, 0.7) * RATE)
            onset = int(rng.integers(0, RATE - length))
            k = np.arange(length)
            envelope = np.sin(np.pi * k / length)
            for f0, f1 in pitches[y[i]] * rng.uniform(0.95, 1.05):
                # the phase of a tone gliding linearly from f0 to f1 Hz, in closed form
                phase = 2 * np.pi / RATE * (f0 * k + (f1 - f0) * k * k / (2 * length))
                clips[i, onset:onset + length] += (0.5 * rng.uniform(0.5, 1.0)
                                                   * envelope * np.sin(phase))
        return log_mel(clips), y

    train, test, proxy = draw(n_train), draw(n_test), draw(n_proxy)
    return Splits(*train, *test, *proxy)


@lru_cache(maxsize=2)
def _splits(directory: Path | None) -> Splits:
    return synthetic() if directory is None else read_speech_commands(directory)


def load_data() -> Splits:
    """Speech Commands from $FEDGE_SPEECH_COMMANDS_DIR, or the synthetic set."""
    return _splits(dataset_dir(ENV, "keywords-cnn"))


def cnn() -> nn.Module:
    """Teacher: four 3x3 convolutions (16-32-64-64 channels) and max pooling over the
    spectrogram, global average, a dense layer (about 61k parameters)."""
    from torch import nn

    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]

    return nn.Sequential(
        *conv(1, 16), nn.MaxPool2d(2), *conv(16, 32), nn.MaxPool2d(2),
        *conv(32, 64), nn.MaxPool2d(2), *conv(64, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(LABELS)))


def ds_cnn_student() -> nn.Module:
    """Student: a DS-CNN (Zhang et al., "Hello Edge", 2017) in small: a strided 3x3
    convolution, then depthwise-separable blocks, about 3k parameters."""
    from torch import nn

    def separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.ReLU(),
                nn.Conv2d(cin, cout, 1), nn.ReLU()]

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), *separable(16, 32, 2), *separable(32, 48, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, len(LABELS)))


def cnn_task() -> Task:
    """Keyword spotting on log-mel spectrograms with a small CNN and a DS-CNN student."""
    return Task(
        name="keywords-cnn",
        schema=DataSchema(input_shape=SHAPE, labels=LABELS, raw_kind="tensor"),
        build_model=cnn,
        load_data=load_data,
        defaults=TrainDefaults(epochs=1, lr=0.05, batch_size=32, momentum=0.9),
        build_student=ds_cnn_student,
        description="1 s 16 kHz clips of 10 words (Speech Commands) as 40x101 log-mel, "
                    "a small CNN",
    )
