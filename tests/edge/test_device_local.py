"""A device-local artifact (a device's own personalized model, unsigned) is opened only
as such: never by the signature check every install goes through, and a server's
artifact is never opened as a device-local one."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from fedge.edge.compiler.keys import SigningKey
from fedge.edge.runtime import ArtifactError, ArtifactFiles, verify
from fedge.edge.runtime.artifact import FORMAT
from fedge.edge.runtime.verify import LOCAL_ORIGIN, verify_local

MODEL = b"not really onnx: only its hash is checked here"


def _files(manifest: dict[str, Any], model: bytes = MODEL) -> ArtifactFiles:
    return ArtifactFiles(json.dumps(manifest).encode(), model)


def _manifest(**extra: Any) -> dict[str, Any]:
    return {"format": FORMAT, "round": 3, "model": {"sha256": hashlib.sha256(MODEL).hexdigest()},
            **extra}


def test_a_device_local_artifact_opens_only_as_device_local() -> None:
    key = SigningKey.generate()
    local = _manifest(origin=LOCAL_ORIGIN, device_id="dev-0")
    manifest = verify_local(_files(local))
    assert manifest.device_local and manifest.round == 3
    with pytest.raises(ArtifactError, match=r"device-local artifact .* never installed"):
        verify(_files(local), key.public_bytes)
    # Signed or not, a manifest marked device-local never passes for the server's.
    with pytest.raises(ArtifactError, match="device-local"):
        verify(_files(key.sign_manifest(local)), key.public_bytes)
    with pytest.raises(ArtifactError, match="carries no signature"):
        verify_local(_files(key.sign_manifest(local)))
    with pytest.raises(ArtifactError, match="does not match"):
        verify_local(_files(local, model=MODEL + b"!"))


def test_a_server_artifact_is_not_opened_as_device_local() -> None:
    key = SigningKey.generate()
    signed = key.sign_manifest(_manifest())
    assert not verify(_files(signed), key.public_bytes).device_local
    with pytest.raises(ArtifactError, match="not a device-local artifact"):
        verify_local(_files(signed))
    with pytest.raises(ArtifactError, match="not a device-local artifact"):
        verify_local(_files(_manifest()))  # unsigned, and not marked device-local either
