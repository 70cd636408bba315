"""Running an edge model with onnxruntime, using only what its manifest says.

A model is usable once onnxruntime is at least the manifest's ``min_runtime``, loads
it, and runs it on one input to outputs of the shape the manifest gives (``probe``):
a device switches to a new model only after all three (see ``install.py``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from fedge.edge.runtime.artifact import ArtifactError, ArtifactFiles, Manifest, read_artifact
from fedge.edge.runtime.verify import verify, verify_local


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string ("1.20.1" -> (1, 20, 1); "1.18.0.dev1"
    -> (1, 18, 0)); ArtifactError if it does not start with one."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    if match is None:
        raise ArtifactError(f"{version!r} is not a version number")
    return tuple(int(part) for part in match.group(0).split("."))


def runtime_problem(manifest: Manifest, installed: str) -> str | None:
    """Why onnxruntime ``installed`` is too old for the manifest's model (None: it is
    not, or the manifest names no minimum)."""
    required = manifest.min_onnxruntime
    if required is None:
        return None
    have, need = _release(installed), _release(required)
    width = max(len(have), len(need))
    if have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need)):
        return None
    return (f"the model needs onnxruntime >= {required} (its manifest's min_runtime); "
            f"this device has {installed}: upgrade onnxruntime to install it")


class EdgeModel:
    """An onnxruntime session over an artifact's model, fed as the manifest describes.

    threads: onnxruntime's intra-op threads (0 lets it choose).
    Raises ArtifactError for a model this device cannot run: onnxruntime older than
    the manifest's min_runtime, a model that differs from its manifest, or one that
    onnxruntime will not load.
    """

    def __init__(self, files: ArtifactFiles, manifest: Manifest, threads: int = 0) -> None:
        import onnxruntime as ort

        if hashlib.sha256(files.model).hexdigest() != manifest.sha256:
            raise ArtifactError("model.onnx does not match its manifest's SHA-256")
        problem = runtime_problem(manifest, ort.__version__)
        if problem is not None:
            raise ArtifactError(problem)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(files.model, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(f"onnxruntime {ort.__version__} cannot load the model: "
                                f"{exc}") from exc
        self.manifest = manifest
        self._dtype = np.dtype(manifest.input_dtype)
        self._shape = manifest.input_shape[1:]

    @classmethod
    def open(cls, path: str | Path, public_key: bytes | None = None,
             threads: int = 0, local: bool = False) -> EdgeModel:
        """Loads the artifact at path; verifies its signature too when given a key, or
        (local) that it is a device-local artifact (verify_local)."""
        files = read_artifact(path)
        if local:
            manifest = verify_local(files)
        elif public_key is not None:
            manifest = verify(files, public_key)
        else:
            from fedge.edge.runtime.artifact import parse_manifest

            manifest = Manifest(parse_manifest(files.manifest))
        return cls(files, manifest, threads)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The model's output for a batch x (shape [n, *input shape])."""
        x = np.ascontiguousarray(x, dtype=self._dtype)
        if list(x.shape[1:]) != self._shape:
            raise ArtifactError(f"inputs have shape {list(x.shape[1:])} per example, the "
                                f"model takes {self._shape}")
        (out,) = self.session.run(None, {self.manifest.input_name: x})
        return np.asarray(out)

    def probe(self) -> None:
        """Runs the model once, on zeros of its input shape (symbolic dimensions as 1),
        and checks the output: one finite row of one logit per label. Raises
        ArtifactError naming what failed; onnxruntime may load a graph it cannot run."""
        shape = [1, *(d if isinstance(d, int) and d > 0 else 1 for d in self._shape)]
        try:
            out = self.logits(np.zeros(shape, self._dtype))
        except ArtifactError:
            raise
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(f"the model loads but fails on one input: {exc}") from exc
        labels = len(self.manifest.labels)
        if out.shape != (1, labels):
            raise ArtifactError(f"the model gives outputs of shape {list(out.shape)} for "
                                f"one input, its manifest says [1, {labels}]")
        if not np.isfinite(out).all():
            raise ArtifactError("the model gives non-finite outputs for an input of zeros")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The predicted class index of each row of x."""
        return self.logits(x).argmax(axis=1)

    def accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> float:
        """Share of examples of (x, y) predicted right."""
        if len(x) == 0:
            return 0.0
        correct = sum(int((self.predict(x[i:i + batch_size]) == y[i:i + batch_size]).sum())
                      for i in range(0, len(x), batch_size))
        return correct / len(x)
