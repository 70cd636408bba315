"""The device side of edge models: verify a signed artifact, install it atomically with
rollback, and run it with onnxruntime.

Needs only numpy and onnxruntime (and uses ``cryptography`` for signature checks when it
is installed, a pure-Python Ed25519 verifier otherwise): no torch, no gRPC.
"""

from fedge.edge.runtime.artifact import ArtifactError, ArtifactFiles, Manifest, pack, read_artifact
from fedge.edge.runtime.infer import EdgeModel
from fedge.edge.runtime.install import ModelDir
from fedge.edge.runtime.verify import load_public_key, verify

__all__ = ["ArtifactError", "ArtifactFiles", "EdgeModel", "Manifest", "ModelDir",
           "load_public_key", "pack", "read_artifact", "verify"]
