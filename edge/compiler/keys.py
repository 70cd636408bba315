"""The server's Ed25519 signing key: made in the state directory on first use (the
private key readable by its owner only), with the public key beside it as a PEM file
that devices are configured to trust."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedge.edge.runtime.artifact import canonical
from fedge.edge.runtime.verify import key_id, public_key_pem
from fedge.errors import FedgeError

log = logging.getLogger(__name__)

PRIVATE_FILE = "edge-signing-key.pem"
PUBLIC_FILE = "edge-public-key.pem"


class SigningKey:
    """An Ed25519 private key that signs artifact manifests."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = key_id(self.public_bytes)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, directory: str | Path) -> SigningKey:
        """The key in directory, made (0600) with its public PEM on first use."""
        directory = Path(directory)
        private_path = directory / PRIVATE_FILE
        if private_path.exists():
            try:
                private = serialization.load_pem_private_key(private_path.read_bytes(), None)
            except (OSError, ValueError) as exc:
                raise FedgeError(f"cannot read the signing key {private_path}: {exc}") from exc
            if not isinstance(private, Ed25519PrivateKey):
                raise FedgeError(f"{private_path} is not an Ed25519 private key")
            key = cls(private)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            key = cls.generate()
            pem = key._private.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
            tmp = private_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, private_path)
            log.info("made a new edge signing key %s in %s", key.key_id, private_path)
        public_path = directory / PUBLIC_FILE
        if not public_path.exists() or public_path.read_text() != key.public_pem():
            public_path.write_text(key.public_pem())
        return key

    def public_pem(self) -> str:
        return public_key_pem(self.public_bytes)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def sign_manifest(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """manifest with a ``signature`` entry over its canonical JSON."""
        signature = self.sign(canonical(manifest))
        return {**manifest, "signature": {"algorithm": "ed25519", "key_id": self.key_id,
                                          "value": base64.b64encode(signature).decode()}}
