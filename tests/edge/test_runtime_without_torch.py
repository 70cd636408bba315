"""The device side runs with numpy and onnxruntime alone: no torch, no training code."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from fedge.edge.compiler.keys import PUBLIC_FILE
from tests.edge.conftest import Built

BLOCK_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['cryptography'] = None; "


def test_importing_the_runtime_pulls_in_no_torch() -> None:
    code = ("import sys, fedge.edge.runtime, fedge.client.deploy; "
            "heavy = sorted(m for m in ('torch', 'onnx', 'sklearn', 'cryptography', "
            "'fedge.edge.compiler') if m in sys.modules); print(heavy)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.strip() == "[]", run.stdout


def test_edge_verify_and_predict_commands_work_with_torch_unimportable(built: Built,
                                                                       tmp_path) -> None:
    x = built.splits.test_x[:7]
    np.save(tmp_path / "x.npy", x)
    key = str(built.root / "state" / PUBLIC_FILE)

    def fedge(*args: str) -> subprocess.CompletedProcess[str]:
        code = BLOCK_TORCH + f"from fedge.cli import main; sys.exit(main({list(args)!r}))"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)

    verified = fedge("edge", "verify", str(built.artifact), "--public-key", key)
    assert verified.returncode == 0, verified.stderr
    assert "OK" in verified.stdout and "round 3" in verified.stdout
    predicted = fedge("edge", "predict", str(built.artifact), str(tmp_path / "x.npy"),
                      "--public-key", key)
    assert predicted.returncode == 0, predicted.stderr
    from fedge.edge.runtime import EdgeModel

    expected = [str(i) for i in EdgeModel.open(built.artifact).predict(x)]
    assert predicted.stdout.split() == expected
    other = tmp_path / "other.pem"
    from fedge.edge.compiler.keys import SigningKey

    other.write_text(SigningKey.generate().public_pem())
    refused = fedge("edge", "verify", str(built.artifact), "--public-key", str(other))
    assert refused.returncode == 2 and "not by the trusted key" in refused.stderr


def test_the_command_and_the_client_daemon_import_no_torch() -> None:
    """What an edge-only device runs, importing the daemon and its data readers."""
    code = ("import contextlib, io, sys\n"
            "import fedge.client.daemon, fedge.client.data, fedge.client.deploy\n"
            "import fedge.client.inference\n"
            "from fedge.cli import main\n"
            "for argv in (['--help'], ['client', '--help'], ['edge', '--help'],\n"
            "             ['edge', 'predict', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), \\\n"
            "            contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "from fedge.tasks import load_task\n"
            "load_task('digits-mlp'); load_task('digits-cnn')\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'onnx', 'fedge.client.trainer') "
            "if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.strip() == "[]", run.stdout
