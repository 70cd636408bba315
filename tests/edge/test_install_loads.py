"""A signed artifact becomes the device's model only once this device runs it: loaded by
onnxruntime (at least the manifest's min_runtime) and run on one input. A model that
verifies but will not load is refused, the old one keeps serving, and the logs say so."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fedge.config import ClientConfig
from fedge.edge.compiler.keys import PUBLIC_FILE
from fedge.edge.runtime import (
    ArtifactError,
    ArtifactFiles,
    EdgeModel,
    ModelDir,
    load_public_key,
    pack,
    read_artifact,
)
from fedge.edge.runtime.artifact import Manifest
from fedge.edge.runtime.infer import runtime_problem
from tests.edge.conftest import Built


def _resigned(built: Built, model: bytes, **changes: object) -> ArtifactFiles:
    """The built artifact with another model (and manifest changes), signed properly by
    the server's key: it verifies, whatever the model holds."""
    manifest = json.loads(read_artifact(built.artifact).manifest)
    manifest.pop("signature")
    manifest["round"] = manifest["model_version"] = 7
    manifest["model"] = {**manifest["model"], "sha256": hashlib.sha256(model).hexdigest(),
                         "bytes": len(model)}
    manifest.update(changes)
    return ArtifactFiles(json.dumps(built.key.sign_manifest(manifest)).encode(), model)


def _newer_ir(model: onnx.ModelProto) -> None:
    model.ir_version = 99  # no onnxruntime reads IR 99


def _unknown_op(model: onnx.ModelProto) -> None:
    model.graph.node[-1].op_type = "NoSuchOperator"


def _dangling_input(model: onnx.ModelProto) -> None:
    model.graph.node[-1].input[0] = "a_tensor_nothing_makes"


BROKEN: dict[str, Callable[[onnx.ModelProto], None]] = {
    "IR version too new": _newer_ir, "unknown operator": _unknown_op,
    "dangling graph input": _dangling_input}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_a_signed_model_that_will_not_load_is_refused_and_the_old_one_serves(
        built: Built, tmp_path: Path, breakage: str) -> None:
    key = load_public_key(built.root / "state" / PUBLIC_FILE)
    device = ModelDir(tmp_path / "device")
    device.install(read_artifact(built.artifact), key)
    serving = device.current()
    assert serving is not None
    model = onnx.load_from_string(read_artifact(built.artifact).model)
    BROKEN[breakage](model)
    broken = _resigned(built, model.SerializeToString())

    with pytest.raises(ArtifactError, match=r"cannot load|fails on one input"):
        device.install(broken, key)
    assert device.current() == serving and device.previous() is None
    assert [p.name for p in (tmp_path / "device" / "versions").iterdir()] == [serving.name]
    assert EdgeModel.open(serving, key).accuracy(built.splits.test_x,
                                                 built.splits.test_y) > 0.8


def test_a_model_for_a_newer_runtime_is_refused_with_the_versions(built: Built,
                                                                   tmp_path: Path) -> None:
    key = load_public_key(built.root / "state" / PUBLIC_FILE)
    device = ModelDir(tmp_path / "device")
    device.install(read_artifact(built.artifact), key)
    serving = device.current()
    future = _resigned(built, read_artifact(built.artifact).model,
                       min_runtime={"onnxruntime": "99.1"})
    with pytest.raises(ArtifactError) as refused:
        device.install(future, key)
    assert "onnxruntime >= 99.1" in str(refused.value)
    assert ort.__version__ in str(refused.value)
    assert device.current() == serving


def test_min_runtime_compares_release_numbers() -> None:
    def needs(version: str) -> Manifest:
        return Manifest({"min_runtime": {"onnxruntime": version}})

    assert runtime_problem(needs("1.17"), "1.17.0") is None
    assert runtime_problem(needs("1.17"), "1.20.1") is None
    assert runtime_problem(needs("1.9"), "1.17.3") is None  # numbers, not strings
    assert runtime_problem(needs("1.17.1"), "1.17.0.dev20240101") is not None
    assert runtime_problem(needs("2.0"), "1.22.0") is not None
    assert runtime_problem(Manifest({}), "1.0") is None  # an older manifest names none
    with pytest.raises(ArtifactError, match="not a version"):
        runtime_problem(needs("latest"), "1.20.0")


def test_the_daemon_hand_off_logs_what_happened(built: Built, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    from fedge.client.deploy import install_and_evaluate

    config = ClientConfig(server="127.0.0.1:1", device_id="phone", insecure=True,
                          trust_key=str(built.root / "state" / PUBLIC_FILE),
                          model_dir=str(tmp_path / "device"))
    x, y = built.splits.test_x[:50], built.splits.test_y[:50]
    good = pack(read_artifact(built.artifact))
    assert install_and_evaluate(good, config, x, y)["edge_installed"] == 1.0
    serving = ModelDir(config.model_dir).current()
    model = onnx.load_from_string(read_artifact(built.artifact).model)
    _newer_ir(model)
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(ArtifactError):
        install_and_evaluate(pack(_resigned(built, model.SerializeToString())), config, x, y)
    assert ModelDir(config.model_dir).current() == serving
    assert not [r for r in caplog.records if "installed" in r.getMessage()]
    assert np.isfinite(install_and_evaluate(good, config, x, y)["edge_accuracy"])
