"""A device's model directory: verified artifacts installed atomically, the previous
one kept for rollback.

Layout::

    MODEL_DIR/versions/round-000010-1a2b3c4d5e6f/{model.onnx, manifest.json}
    MODEL_DIR/current.json   {"current": "round-000010-...", "previous": "round-000005-..."}

An install verifies first, then loads the model with onnxruntime (at least the
manifest's ``min_runtime``) and runs it on one input: nothing is written for an
artifact that fails any of these. It then writes the new version into a temporary
directory, syncs and renames it into ``versions/``, and only
then replaces ``current.json`` (temporary file, sync, rename). A crash at any point
leaves the model that was serving before. Versions other than the current and the
previous one are removed after a successful install.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from fedge.edge.runtime.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    ArtifactError,
    ArtifactFiles,
    Manifest,
    read_artifact,
)
from fedge.edge.runtime.infer import EdgeModel
from fedge.edge.runtime.verify import verify

log = logging.getLogger(__name__)

POINTER = "current.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class ModelDir:
    """The installed edge models of one device."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions = self.root / "versions"

    def _pointer(self) -> dict[str, str | None]:
        try:
            data = json.loads((self.root / POINTER).read_text())
        except FileNotFoundError:
            return {"current": None, "previous": None}
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{self.root / POINTER} is damaged: {exc}") from exc
        return {"current": data.get("current"), "previous": data.get("previous")}

    def _set_pointer(self, current: str | None, previous: str | None) -> None:
        tmp = self.root / (POINTER + ".tmp")
        _write_synced(tmp, json.dumps({"current": current, "previous": previous}).encode())
        os.replace(tmp, self.root / POINTER)
        _fsync_dir(self.root)

    def current(self) -> Path | None:
        """The directory of the model serving now, or None before the first install."""
        name = self._pointer()["current"]
        return self.versions / name if name else None

    def previous(self) -> Path | None:
        """The directory of the model that served before the current one, if kept."""
        name = self._pointer()["previous"]
        return self.versions / name if name else None

    def install(self, files: ArtifactFiles, public_key: bytes) -> Manifest:
        """Verifies files against public_key, checks that this device runs the model
        (loaded by onnxruntime and run on one input), and makes them the current model.

        A refused artifact raises ArtifactError and changes nothing on disk.
        """
        manifest = verify(files, public_key)
        name = f"round-{manifest.round:06d}-{manifest.sha256[:12]}"
        pointer = self._pointer()
        if pointer["current"] == name:
            log.info("model %s is already installed", name)
            return manifest
        # A signed model may still not run here (an older onnxruntime, a graph it cannot
        # load): find out before it replaces the one serving.
        EdgeModel(files, manifest, threads=1).probe()
        self.versions.mkdir(parents=True, exist_ok=True)
        target = self.versions / name
        if not target.exists():
            staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.versions))
            try:
                _write_synced(staging / MODEL_FILE, files.model)
                _write_synced(staging / MANIFEST_FILE, files.manifest)
                _fsync_dir(staging)
                os.replace(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _fsync_dir(self.versions)
        self._set_pointer(name, pointer["current"])
        self._prune({name, pointer["current"]})
        log.info("installed edge model %s (previous: %s)", name, pointer["current"])
        return manifest

    def install_path(self, path: str | Path, public_key: bytes) -> Manifest:
        """Installs the artifact at path (a directory or a packed file)."""
        return self.install(read_artifact(path), public_key)

    def rollback(self) -> Path:
        """Makes the previous model current again (and the current one the previous)."""
        pointer = self._pointer()
        if not pointer["previous"]:
            raise ArtifactError(f"{self.root} keeps no previous model to roll back to")
        self._set_pointer(pointer["previous"], pointer["current"])
        log.info("rolled back to edge model %s", pointer["previous"])
        return self.versions / str(pointer["previous"])

    def _prune(self, keep: set[str | None]) -> None:
        for entry in self.versions.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
