"""The built artifact: a checked int8 ONNX model, a signed manifest that says how to run
it, and a device install that refuses anything tampered with and keeps serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fedge.edge.compiler.keys import PUBLIC_FILE, SigningKey
from fedge.edge.runtime import (
    ArtifactError,
    ArtifactFiles,
    EdgeModel,
    ModelDir,
    load_public_key,
    pack,
    read_artifact,
    verify,
)
from fedge.edge.runtime.artifact import unpack
from tests.edge.conftest import Built


def test_the_model_is_checked_int8_onnx_for_old_runtimes(built: Built) -> None:
    model = onnx.load(built.artifact / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    int8 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) >= 2  # both layers' weights
    assert model.ir_version <= 9
    used = {n.domain for n in model.graph.node}
    assert {o.domain for o in model.opset_import} <= used | {""}
    assert {n.op_type for n in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    # The logits leave the last layer in float: no 8-bit rounding of the outputs.
    (last,) = [n for n in model.graph.node if model.graph.output[0].name in n.output]
    assert last.op_type == "Gemm"


def test_a_plain_session_runs_it_from_the_manifest_alone(built: Built) -> None:
    manifest = json.loads((built.artifact / "manifest.json").read_text())
    session = ort.InferenceSession(str(built.artifact / "model.onnx"))
    x = built.splits.test_x.astype(manifest["input"]["dtype"])
    assert list(x.shape[1:]) == manifest["input"]["shape"][1:]
    (logits,) = session.run(None, {manifest["input"]["name"]: x})
    labels = manifest["output"]["labels"]
    predicted = [labels[i] for i in np.asarray(logits).argmax(axis=1)]
    accuracy = float(np.mean([p == str(t) for p, t in zip(predicted, built.splits.test_y,
                                                          strict=True)]))
    assert accuracy == pytest.approx(manifest["accuracy"]["int8"])
    assert manifest["round"] == 3 and manifest["min_runtime"]["onnxruntime"] == "1.17"


def test_the_build_measures_what_it_claims(built: Built) -> None:
    r = built.report
    assert r.teacher_params == 26122 and r.student_params == 1810
    assert r.fp32_onnx_bytes >= 8 * r.int8_onnx_bytes
    assert r.int8_onnx_bytes == (built.artifact / "model.onnx").stat().st_size
    assert r.max_abs_diff_teacher < 1e-4 and r.max_abs_diff_student < 1e-4
    assert r.int8_accuracy >= r.teacher_accuracy - 0.03
    assert r.quantization == "static-qdq"


def test_verify_accepts_the_artifact_directory_and_its_packed_file(built: Built,
                                                                  tmp_path: Path) -> None:
    key = load_public_key(built.root / "state" / PUBLIC_FILE)
    files = read_artifact(built.artifact)
    packed = tmp_path / "art.zip"
    packed.write_bytes(pack(files))
    assert verify(read_artifact(packed), key).round == 3
    assert pack(unpack(packed.read_bytes())) == packed.read_bytes()  # deterministic


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def _tampered(files: ArtifactFiles, other: SigningKey) -> dict[str, ArtifactFiles]:
    manifest = json.loads(files.manifest)
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    # Change a value, keep valid JSON: the signature no longer covers it.
    altered = {**manifest, "accuracy": {**manifest["accuracy"], "int8": 1.0}}
    return {
        "flipped model byte": ArtifactFiles(files.manifest, _flip(files.model,
                                                                  len(files.model) // 2)),
        "flipped manifest byte": ArtifactFiles(_flip(files.manifest, 40), files.model),
        "altered manifest value": ArtifactFiles(json.dumps(altered).encode(), files.model),
        "missing signature": ArtifactFiles(json.dumps(unsigned).encode(), files.model),
        "another key": ArtifactFiles(json.dumps(other.sign_manifest(unsigned)).encode(),
                                     files.model),
    }


def test_tampered_unsigned_or_foreign_artifacts_are_refused_and_the_old_model_serves(
        built: Built, tmp_path: Path) -> None:
    key = load_public_key(built.root / "state" / PUBLIC_FILE)
    files = read_artifact(built.artifact)
    device = ModelDir(tmp_path / "device")
    device.install(files, key)
    serving = device.current()
    assert serving is not None
    before = EdgeModel.open(serving, key).predict(built.splits.test_x)
    listing = sorted(p.name for p in (tmp_path / "device").rglob("*"))
    messages = {}
    for name, bad in _tampered(files, SigningKey.generate()).items():
        with pytest.raises(ArtifactError) as refused:
            device.install(bad, key)
        messages[name] = str(refused.value)
        assert device.current() == serving, name
        assert sorted(p.name for p in (tmp_path / "device").rglob("*")) == listing, name
    assert "SHA-256" in messages["flipped model byte"]
    assert "unsigned" in messages["missing signature"]
    assert "not by the trusted key" in messages["another key"]
    assert "does not verify" in messages["altered manifest value"]
    after = EdgeModel.open(serving, key).predict(built.splits.test_x)
    np.testing.assert_array_equal(before, after)


def test_a_damaged_packed_artifact_is_refused(built: Built) -> None:
    blob = pack(read_artifact(built.artifact))
    with pytest.raises(ArtifactError, match="damaged"):
        unpack(_flip(blob, len(blob) // 2))
    with pytest.raises(ArtifactError):
        unpack(blob[:100])


def test_install_keeps_the_previous_version_and_rolls_back(built: Built,
                                                           tmp_path: Path) -> None:
    key = load_public_key(built.root / "state" / PUBLIC_FILE)
    first = read_artifact(built.artifact)
    # A second, newer artifact: same model, manifest of another round, signed properly.
    manifest = json.loads(first.manifest)
    manifest["round"] = manifest["model_version"] = 5
    second = ArtifactFiles(json.dumps(built.key.sign_manifest(manifest)).encode(),
                           first.model)
    device = ModelDir(tmp_path / "device")
    device.install(first, key)
    v1 = device.current()
    device.install(second, key)
    v2 = device.current()
    assert v1 is not None and v2 is not None and v1 != v2
    assert device.previous() == v1 and v1.exists()
    assert device.rollback() == v1 and device.current() == v1 and device.previous() == v2
    assert EdgeModel.open(v1, key).manifest.round == 3


def test_a_model_file_changed_after_install_does_not_load(built: Built,
                                                         tmp_path: Path) -> None:
    copy = tmp_path / "art"
    shutil.copytree(built.artifact, copy)
    (copy / "model.onnx").write_bytes(_flip((copy / "model.onnx").read_bytes(), 200))
    with pytest.raises(ArtifactError, match="SHA-256"):
        EdgeModel.open(copy)
