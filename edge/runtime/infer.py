"""Running an edge model with onnxruntime, using only what its manifest says."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fedge.edge.runtime.artifact import ArtifactError, ArtifactFiles, Manifest, read_artifact
from fedge.edge.runtime.verify import verify


class EdgeModel:
    """An onnxruntime session over an artifact's model, fed as the manifest describes.

    threads: onnxruntime's intra-op threads (0 lets it choose).
    """

    def __init__(self, files: ArtifactFiles, manifest: Manifest, threads: int = 0) -> None:
        import onnxruntime as ort

        if hashlib.sha256(files.model).hexdigest() != manifest.sha256:
            raise ArtifactError("model.onnx does not match its manifest's SHA-256")
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
             threads: int = 0) -> EdgeModel:
        """Loads the artifact at path; verifies its signature too when given a key."""
        files = read_artifact(path)
        if public_key is not None:
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
