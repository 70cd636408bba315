"""`pip install 'fedge[edge]'` from a built wheel, in a fresh venv, with the oldest
onnxruntime we support (1.17.3): no torch and no cryptography there, the shipped artifact
verifies (pure-Python Ed25519) and predicts exactly as on the full install, a signed
model that runtime cannot load is refused with the old model kept, and that
venv's `fedge client --inference-only` joins a real server, installs the artifact the
server ships after training and reports its on-device metrics, while daemons of the full
install train."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.cli import main
from fedge.edge.compiler.keys import PUBLIC_FILE
from fedge.edge.runtime import ArtifactFiles, EdgeModel, ModelDir, read_artifact
from fedge.edge.runtime.artifact import write_artifact
from fedge.server.store import StateStore
from tests.edge.conftest import Built
from tests.fleet import Fleet

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
OLDEST_ORT = "1.17.3"
# onnxruntime 1.17 was built against numpy 1.x; it does not load under numpy 2.
OLDEST_NUMPY = "1.26.4"
PACKAGES = ("fedge", "protos", "server", "client", "edge", "simulations")

# Run by the edge venv's interpreter: what it has, and the old runtime's checks.
PROBE = """
import importlib.util, json, sys
import numpy as np, onnxruntime
import fedge.edge.runtime
from fedge.edge.runtime import ArtifactError, EdgeModel, ModelDir, load_public_key
from fedge.edge.runtime import read_artifact
artifact, key, raw, signed_raw, models = sys.argv[1:6]
EdgeModel.open(artifact, load_public_key(key))
try:
    onnxruntime.InferenceSession(raw)
    raw_refused = False
except Exception:
    raw_refused = True
# A signed artifact this runtime cannot load is refused; the model serving stays.
device = ModelDir(models)
device.install_path(artifact, load_public_key(key))
serving = device.current()
try:
    device.install_path(signed_raw, load_public_key(key))
    install_refused = ""
except ArtifactError as exc:
    install_refused = str(exc)
print(json.dumps({
    "ort": onnxruntime.__version__, "raw_refused": raw_refused,
    "install_refused": install_refused, "kept": device.current() == serving,
    "fedge_from": fedge.edge.runtime.__file__,
    "missing": [m for m in ("torch", "cryptography", "sklearn", "onnx")
                if importlib.util.find_spec(m) is None],
    "loaded": [m for m in ("torch", "cryptography") if m in sys.modules]}))
"""


def build_wheel(tmp: Path) -> Path:
    """The project's wheel, built offline from a copy of the tree (so that setuptools'
    build/ and egg-info never land in the checkout)."""
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(src), "-w", str(tmp / "dist")],
                   check=True, capture_output=True, timeout=180)
    (wheel,) = (tmp / "dist").glob("fedge-*.whl")
    return wheel


def edge_venv(tmp: Path) -> tuple[Path, float]:
    """A fresh venv holding only the wheel's edge extra; returns it and the seconds the
    venv and the install took. This pip installs into it (pip --python), which spares
    the venv its own pip and setuptools; --no-compile spares writing bytecode for
    onnxruntime's sympy, which inference never imports."""
    wheel = build_wheel(tmp)
    venv = tmp / "edge-venv"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    # Without PYTHONPATH: a checkout on it that holds a fedge.egg-info (a wheel built
    # from the checkout leaves one) makes pip think fedge is installed there already.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "-q", "--no-compile", f"{wheel}[edge]", f"onnxruntime=={OLDEST_ORT}",
         f"numpy=={OLDEST_NUMPY}"],
        capture_output=True, text=True, timeout=400, env=env)
    assert install.returncode == 0, install.stderr[-2000:]
    return venv, time.perf_counter() - started


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def raw_export(built: Built, x: np.ndarray, path: Path) -> None:
    """The control: the exporter's own output (IR 10), which onnxruntime 1.17 refuses."""
    student = built.task.build_student() if built.task.build_student else None
    assert student is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        program = torch.onnx.export(student.eval(), (torch.from_numpy(x[:2]),), None,
                                    input_names=["input"], external_data=False, dynamo=True,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert program is not None and program.model_proto.ir_version >= 10
    path.write_bytes(program.model_proto.SerializeToString())


def signed_with_model(built: Built, model: bytes, out: Path) -> Path:
    """The built artifact with another model, properly signed (round 9)."""
    manifest = json.loads(read_artifact(built.artifact).manifest)
    manifest.pop("signature")
    manifest["round"] = manifest["model_version"] = 9
    manifest["model"] = {**manifest["model"], "sha256": hashlib.sha256(model).hexdigest()}
    manifest = built.key.sign_manifest(manifest)
    return write_artifact(ArtifactFiles(json.dumps(manifest).encode(), model), out)


def test_edge_only_install_predicts_exactly_and_serves_as_an_inference_only_device(
        built: Built, fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    venv, install_seconds = edge_venv(tmp_path / "build")
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHONUNBUFFERED="1")
    work = tmp_path / "device"
    work.mkdir()  # not the checkout: the venv must import its installed copy

    def edge_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=120,
                              cwd=work, env=env)

    no_torch = edge_run(str(bin_dir / "python"), "-c", "import torch")
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    key = str(built.root / "state" / PUBLIC_FILE)
    x = built.splits.test_x
    np.save(tmp_path / "x.npy", x)
    raw_export(built, x, tmp_path / "raw.onnx")
    signed_raw = signed_with_model(built, (tmp_path / "raw.onnx").read_bytes(),
                                   tmp_path / "signed-raw")
    probe = edge_run(str(bin_dir / "python"), "-c", PROBE, str(built.artifact), key,
                     str(tmp_path / "raw.onnx"), str(signed_raw), str(tmp_path / "models"))
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["ort"] == OLDEST_ORT and found["fedge_from"].startswith(str(venv))
    assert found["missing"] == ["torch", "cryptography", "sklearn", "onnx"]
    assert found["loaded"] == []  # the signature was checked by the pure-Python verifier
    assert found["raw_refused"], "the control model loaded: the old runtime is not old"
    assert "cannot load" in found["install_refused"] and found["kept"], found

    assert edge_run(str(bin_dir / "fedge"), "client", "--help").returncode == 0
    predicted = edge_run(str(bin_dir / "fedge"), "edge", "predict", str(built.artifact),
                         str(tmp_path / "x.npy"), "--public-key", key, "--scores",
                         str(tmp_path / "edge-scores.npy"))
    assert predicted.returncode == 0, predicted.stderr
    full = subprocess.run([sys.executable, "-m", "fedge.cli", "edge", "predict",
                           str(built.artifact), str(tmp_path / "x.npy"), "--public-key", key,
                           "--scores", str(tmp_path / "full-scores.npy")],
                          capture_output=True, text=True, timeout=120, check=True)
    assert predicted.stdout == full.stdout and len(predicted.stdout.split()) == len(x)
    edge_scores = np.load(tmp_path / "edge-scores.npy")
    full_scores = np.load(tmp_path / "full-scores.npy")
    assert edge_scores.dtype == full_scores.dtype == np.float32
    assert edge_scores.tobytes() == full_scores.tobytes(), (
        f"scores differ by up to {np.abs(edge_scores - full_scores).max()}")

    # The same venv as a device on a real server, beside two training daemons.
    dirs = fleet.partitions("digits-mlp", 3)
    server = fleet.server(rounds=1, min_clients=2, edge=True)
    port = server.start()
    token = server.tokens.create("viewer")
    viewer = subprocess.Popen(
        [str(bin_dir / "fedge"), "client", "--inference-only", "--server",
         f"127.0.0.1:{port}", "--insecure", "--device-id", "viewer", "--trust-key",
         str(fleet.tmp / "state" / PUBLIC_FILE), "--model-dir", str(work / "models"),
         "--data", str(dirs[2]), "--poll-seconds", "2"],
        cwd=work, env={**env, "FEDGE_TOKEN": token}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(d.device_id == "viewer" for d in server.registry.all()):
            assert viewer.poll() is None, viewer.communicate()[0]
            assert time.monotonic() < deadline, "the inference-only device never joined"
            time.sleep(0.1)
        trainers = [fleet.client(port, d, f"dev-{k}", trust_key=str(
            fleet.tmp / "state" / PUBLIC_FILE), model_dir=str(fleet.tmp / f"models-{k}"))
                    for k, d in enumerate(dirs[:2])]
        records = server.wait(timeout=180)
        fleet.join_clients(timeout=60)
        output, _ = viewer.communicate(timeout=60)
    finally:
        if viewer.poll() is None:
            viewer.kill()
            viewer.wait()
    assert viewer.returncode == 0, output
    assert "viewer: installed 1 edge model(s), refused 0" in output, output
    assert [r.clients for r in records if r.round > 0] == [2]  # the trainers alone
    assert all(t.stats[0].rounds_trained == 1 for t in trainers)
    current = ModelDir(work / "models").current()
    assert current is not None and current.name.startswith("round-000001-")
    # What an operator sees: `fedge status --json` on the server's state directory.
    capsys.readouterr()
    assert main(["status", "--state-dir", str(fleet.tmp / "state"), "--json"]) == 0
    printed = capsys.readouterr().out
    status = json.loads(printed[printed.index("{"):])
    viewer_status = next(d for d in status["devices"] if d["device_id"] == "viewer")
    assert viewer_status["inference_only"] and viewer_status["edge_model"] == "1"
    assert "onnxruntime 1.17.3" in viewer_status["runtime"]
    store = StateStore(fleet.tmp / "state")
    accuracy = store.metric_values(1, "device", "edge_accuracy")
    latency = store.metric_values(1, "device", "edge_latency_ms_batch1")
    examples = store.metric_values(1, "device", "edge_examples")
    store.close()
    # Its accuracy on its own labelled share, as the full install measures it.
    model = EdgeModel.open(current)
    from fedge.client.data import load_local_data

    share_x, share_y = load_local_data([str(dirs[2])], built.task.schema)
    assert examples["viewer"] == len(share_y)
    assert accuracy["viewer"] == model.accuracy(share_x, share_y) and accuracy["viewer"] > 0.8
    assert latency["viewer"] > 0
    installed = sorted(p.name for p in (venv / "lib").glob("*/site-packages/*.dist-info"))
    print(f"\nedge-only venv {size_mb(venv):.0f} MB, venv + install {install_seconds:.1f} s, "
          f"holding {installed}")
