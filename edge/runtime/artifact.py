"""The edge artifact's layout: ``model.onnx`` and ``manifest.json``, as a directory or
packed into one zip file (what travels on the wire).

The manifest says everything a device needs to run the model without fedge's training
code: the input's name, shape, dtype and preprocessing, what the output means, the
model's SHA-256, the accuracy the server measured, the oldest onnxruntime it loads on,
and an Ed25519 signature over the manifest's canonical JSON (sorted keys, no spaces,
the ``signature`` entry left out). The model is covered through its SHA-256.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedge.errors import FedgeError

FORMAT = "fedge-edge-artifact/1"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
# A zip entry larger than this is refused before it is read (no zip bombs).
MAX_ENTRY_BYTES = 1 << 30
# Fixed entry times make packing the same files give the same bytes.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class ArtifactError(FedgeError):
    """An artifact that is damaged, unsigned, signed by an untrusted key, or unusable."""


@dataclass(frozen=True)
class ArtifactFiles:
    """The two files of an artifact, as bytes."""

    manifest: bytes
    model: bytes


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest (only the parts code reads; ``raw`` holds all of it)."""

    raw: dict[str, Any]

    @property
    def round(self) -> int:
        return int(self.raw["round"])

    @property
    def device_class(self) -> str:
        """The device class the model was built for ("default" in older manifests)."""
        return str(self.raw.get("device_class", "default"))

    @property
    def device_local(self) -> bool:
        """Whether a device built this model itself (personalized; never signed)."""
        return self.raw.get("origin") == "device-local"

    @property
    def sha256(self) -> str:
        return str(self.raw["model"]["sha256"])

    @property
    def input_name(self) -> str:
        return str(self.raw["input"]["name"])

    @property
    def input_shape(self) -> list[int | str]:
        return list(self.raw["input"]["shape"])

    @property
    def input_dtype(self) -> str:
        return str(self.raw["input"]["dtype"])

    @property
    def labels(self) -> list[str]:
        return [str(label) for label in self.raw["output"]["labels"]]

    @property
    def min_onnxruntime(self) -> str | None:
        """The oldest onnxruntime the model loads on (None: the manifest does not say)."""
        required = self.raw.get("min_runtime", {})
        if not isinstance(required, dict) or "onnxruntime" not in required:
            return None
        return str(required["onnxruntime"])


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest without its signature, canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def parse_manifest(data: bytes) -> dict[str, Any]:
    """The manifest's JSON object; ArtifactError if it is not one."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{MANIFEST_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{MANIFEST_FILE} must hold a JSON object")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{MANIFEST_FILE} has format {manifest.get('format')!r}, "
                            f"this runtime reads {FORMAT!r}")
    return manifest


def pack(files: ArtifactFiles) -> bytes:
    """One zip file holding the artifact (stored, not compressed: int8 weights barely
    compress, and a device then reads them without inflating)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in ((MANIFEST_FILE, files.manifest), (MODEL_FILE, files.model)):
            archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data)
    return buffer.getvalue()


def unpack(blob: bytes) -> ArtifactFiles:
    """The files of a packed artifact; ArtifactError unless it holds exactly the two."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            if set(infos) != {MANIFEST_FILE, MODEL_FILE}:
                raise ArtifactError(f"a packed artifact holds {MANIFEST_FILE} and "
                                    f"{MODEL_FILE} only, this one {sorted(infos)}")
            for info in infos.values():
                if info.file_size > MAX_ENTRY_BYTES:
                    raise ArtifactError(f"{info.filename} is {info.file_size} bytes, more "
                                        f"than the {MAX_ENTRY_BYTES} allowed")
            return ArtifactFiles(archive.read(MANIFEST_FILE), archive.read(MODEL_FILE))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        # A flipped byte in a stored entry fails the zip's CRC check here.
        raise ArtifactError(f"the packed artifact is damaged: {exc}") from exc


def read_artifact(path: str | Path) -> ArtifactFiles:
    """Reads an artifact from a directory (model.onnx + manifest.json) or a packed file."""
    path = Path(path)
    try:
        if path.is_dir():
            return ArtifactFiles((path / MANIFEST_FILE).read_bytes(),
                                 (path / MODEL_FILE).read_bytes())
        return unpack(path.read_bytes())
    except OSError as exc:
        raise ArtifactError(f"cannot read the artifact at {path}: {exc}") from exc


def write_artifact(files: ArtifactFiles, directory: str | Path) -> Path:
    """Writes the two files into directory (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_bytes(files.model)
    (directory / MANIFEST_FILE).write_bytes(files.manifest)
    return directory
