"""The shipped model loads on onnxruntime 1.17, in a throwaway venv with nothing but
numpy and that runtime (no torch, no cryptography: the pure-Python verifier runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
artifact, key, inputs = sys.argv[1:4]
model = EdgeModel.open(artifact, load_public_key(key))
print(json.dumps({"ort": onnxruntime.__version__,
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
    run = subprocess.run(
        [python, "-c", SCRIPT, str(built.artifact), str(built.root / "state" / PUBLIC_FILE),
         str(tmp_path / "x.npy")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["ort"] == OLD and result["pure_python_verify"]
    expected = EdgeModel.open(built.artifact).predict(x).tolist()
    assert result["predictions"] == expected
