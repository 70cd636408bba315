"""The shipped model loads on onnxruntime 1.17, in a throwaway venv with nothing but
numpy and that runtime (no torch, no cryptography: the pure-Python verifier runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.build.keys import PUBLIC_FILE
from edge.runtime import EdgeModel
from tests.edge.conftest import Built

pytestmark = pytest.mark.slow
OLD = "1.17.3"
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
import numpy as np, onnxruntime
from edge.runtime import EdgeModel, load_public_key
assert "torch" not in sys.modules and "cryptography" not in sys.modules
artifact, key, inputs, raw = sys.argv[1:5]
model = EdgeModel.open(artifact, load_public_key(key))
try:
    onnxruntime.InferenceSession(raw)
    raw_refused = False
except Exception:
    raw_refused = True
print(json.dumps({"ort": onnxruntime.__version__, "raw_refused": raw_refused,
                  "predictions": model.predict(np.load(inputs)).tolist(),
                  "pure_python_verify": "cryptography" not in sys.modules}))
"""


def test_the_artifact_runs_on_onnxruntime_1_17(built: Built, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        # Inference needs numpy alone; the runtime's other dependencies serve its tools.
        [python, "-m", "pip", "install", "-q", "--no-deps", f"onnxruntime=={OLD}",
         "numpy==1.26.4"],
        capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        pytest.skip(f"cannot install onnxruntime {OLD} here: {install.stderr[-300:]}")
    x = built.splits.test_x
    np.save(tmp_path / "x.npy", x)
    # The control: the exporter's own output (IR 10), which this runtime must refuse.
    student = built.task.build_student() if built.task.build_student else None
    assert student is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        program = torch.onnx.export(student.eval(), (torch.from_numpy(x[:2]),), None,
                                    input_names=["input"], external_data=False, dynamo=True,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert program is not None and program.model_proto.ir_version >= 10
    (tmp_path / "raw.onnx").write_bytes(program.model_proto.SerializeToString())
    run = subprocess.run(
        [python, "-c", SCRIPT, str(built.artifact), str(built.root / "state" / PUBLIC_FILE),
         str(tmp_path / "x.npy"), str(tmp_path / "raw.onnx")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["ort"] == OLD and result["pure_python_verify"]
    assert result["raw_refused"], "the control model loaded: the test proves nothing"
    expected = EdgeModel.open(built.artifact).predict(x).tolist()
    assert result["predictions"] == expected
