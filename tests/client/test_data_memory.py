"""A large CSV streams through the readers in batches: the peak memory of a process that
inspects it grows by a bounded amount, not by the file's size.

The test file is small (tens of MB, the same code path as a 1 GB one); the 1 GB
measurement is in the issue's closing note.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROWS = 80_000
# Growth of peak RSS allowed while streaming; the file is about 12 MB, its examples as
# float32 take 20 MB, and its rows as Python strings would take well over 500 MB.
GROWTH_BOUND_MB = 10

PROBE = """
import json, resource, sys
from fedge.client.data import inspect_sources, load_local_data
from fedge.tasks import DataSchema

def peak_kb():
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the forking
    # parent (pytest, ~100 MB) across exec, which would hide this process's own peak.
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

schema = DataSchema(input_shape=(64,), labels=tuple(str(d) for d in range(10)))
inspect_sources([sys.argv[2]], schema)  # warm up on a small file: imports, first batch
before = peak_kb()
inventory = inspect_sources([sys.argv[1]], schema)
streamed = peak_kb()
x, y = load_local_data([sys.argv[1]], schema)  # holds every example: grows with the file
loaded = peak_kb()
print(json.dumps({"records": inventory.records, "loaded": len(y), "before_kb": before,
                  "streamed_kb": streamed, "loaded_kb": loaded}))
"""


def write_big_csv(path: Path, rows: int, seed: int = 0) -> int:
    """A digits-like CSV (64 intensities 0..16 and a label per row); returns its size."""
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        f.write(",".join([f"p{i}" for i in range(64)] + ["label"]) + "\n")
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            block = rng.integers(0, 17, size=(n, 65))
            block[:, -1] %= 10
            np.savetxt(f, block, fmt="%d", delimiter=",")
    return path.stat().st_size


@pytest.mark.slow  # a subprocess reading a 12 MB CSV twice: several seconds
def test_a_large_csv_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    size = write_big_csv(path, ROWS)
    assert size > GROWTH_BOUND_MB * 2**20
    write_big_csv(tmp_path / "small.csv", 5000, seed=1)
    run = subprocess.run([sys.executable, "-c", PROBE, str(path), str(tmp_path / "small.csv")],
                         capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["records"] == result["loaded"] == ROWS
    streamed_mb = (result["streamed_kb"] - result["before_kb"]) / 1024
    assert streamed_mb < GROWTH_BOUND_MB, result
    # The bound is tight enough to catch a reader that holds the whole file.
    loaded_mb = (result["loaded_kb"] - result["before_kb"]) / 1024
    assert loaded_mb > 2 * GROWTH_BOUND_MB, result
