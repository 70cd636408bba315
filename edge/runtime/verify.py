"""Checking an artifact before a device trusts it: the manifest's Ed25519 signature
against the configured public key, then the model's SHA-256 against the manifest.

A device-local artifact (a model the device personalized itself, see
fedge.edge.compiler.local) is never signed: :func:`verify` refuses it whatever it
carries, and only :func:`verify_local` opens it, as the device's own."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from pathlib import Path

from fedge.edge.runtime import ed25519
from fedge.edge.runtime.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    ArtifactError,
    ArtifactFiles,
    Manifest,
    canonical,
    parse_manifest,
)

log = logging.getLogger(__name__)

# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the raw 32-byte key follows.
LOCAL_ORIGIN = "device-local"  # the manifest's origin for a device's own artifact
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_BEGIN, _PEM_END = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"


def key_id(public_key: bytes) -> str:
    """A short name for a raw public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def load_public_key(path: str | Path) -> bytes:
    """The raw 32-byte Ed25519 key in a PEM ``PUBLIC KEY`` file (as the server exports)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read the public key {path}: {exc}") from exc
    if _PEM_BEGIN not in text or _PEM_END not in text:
        raise ArtifactError(f"{path} is not a PEM public key file")
    body = text.split(_PEM_BEGIN, 1)[1].split(_PEM_END, 1)[0]
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except binascii.Error as exc:
        raise ArtifactError(f"{path}: the PEM body is not base64: {exc}") from exc
    if len(der) != len(_SPKI_PREFIX) + 32 or not der.startswith(_SPKI_PREFIX):
        raise ArtifactError(f"{path} is not an Ed25519 public key")
    return der[len(_SPKI_PREFIX):]


def public_key_pem(public_key: bytes) -> str:
    """The PEM text of a raw Ed25519 public key (what load_public_key reads)."""
    b64 = base64.b64encode(_SPKI_PREFIX + public_key).decode()
    return f"{_PEM_BEGIN}\n{b64}\n{_PEM_END}\n"


def signature_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification with ``cryptography`` when installed, else in pure Python."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return ed25519.verify(public_key, message, signature)
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(files: ArtifactFiles, public_key: bytes) -> Manifest:
    """The artifact's manifest, once its signature and the model's hash check out.

    Raises ArtifactError naming what is wrong: a manifest that does not parse, no
    signature, a signature by another key or one that does not verify, a model whose
    SHA-256 differs from the manifest's.
    """
    manifest = parse_manifest(files.manifest)
    if manifest.get("origin") == LOCAL_ORIGIN:
        raise ArtifactError("this is a device-local artifact (a model a device personalized "
                            "itself), not signed by the server: it is never installed as "
                            "the server's model")
    signature = manifest.get("signature")
    if not isinstance(signature, dict) or not signature.get("value"):
        raise ArtifactError(f"the artifact is unsigned: {MANIFEST_FILE} has no signature")
    if signature.get("algorithm") != "ed25519":
        raise ArtifactError(f"unsupported signature algorithm {signature.get('algorithm')!r}"
                            " (expected ed25519)")
    try:
        raw = base64.b64decode(str(signature["value"]), validate=True)
    except binascii.Error as exc:
        raise ArtifactError("the signature is not base64") from exc
    trusted = key_id(public_key)
    if not signature_valid(public_key, canonical(manifest), raw):
        signer = signature.get("key_id")
        if signer != trusted:
            raise ArtifactError(f"the artifact is signed by key {signer}, not by the trusted "
                                f"key {trusted}")
        raise ArtifactError(f"the signature of {MANIFEST_FILE} does not verify: the "
                            "manifest was altered or the signature is forged")
    _check_model(files, manifest, "signed manifest")
    log.debug("artifact of round %s verified (key %s)", manifest.get("round"), trusted)
    return Manifest(manifest)


def verify_local(files: ArtifactFiles) -> Manifest:
    """The manifest of a device-local artifact: one that says it is device-local, carries
    no signature, and whose model matches its SHA-256. ArtifactError for anything else
    (a server's artifact is opened with verify and its key)."""
    manifest = parse_manifest(files.manifest)
    if manifest.get("origin") != LOCAL_ORIGIN:
        raise ArtifactError(f"not a device-local artifact (its manifest's origin is "
                            f"{manifest.get('origin')!r}): verify it with the server's key")
    if "signature" in manifest:
        raise ArtifactError("a device-local artifact carries no signature; this one does")
    _check_model(files, manifest, "manifest")
    return Manifest(manifest)


def _check_model(files: ArtifactFiles, manifest: dict[str, object], what: str) -> None:
    try:
        expected = str(manifest["model"]["sha256"])  # type: ignore[index]
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{MANIFEST_FILE} does not give the model's sha256") from exc
    actual = hashlib.sha256(files.model).hexdigest()
    if actual != expected:
        raise ArtifactError(f"{MODEL_FILE} does not match the {what}: SHA-256 "
                            f"{actual[:16]}..., expected {expected[:16]}...")
