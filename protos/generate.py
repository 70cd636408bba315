"""Regenerates the Python code for fedge.proto: ``python -m fedge.protos.generate``.

The generated modules are committed; ``tests/protos/test_generated.py`` checks that
regenerating with the pinned grpcio-tools changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "fedge/protos/fedge.proto"  # through the fedge/protos link: imports say fedge.protos


def generate(out_dir: Path) -> None:
    """Writes fedge_pb2.py, fedge_pb2.pyi and fedge_pb2_grpc.py under out_dir/fedge/protos."""
    from grpc_tools import protoc  # only needed by developers, not at run time

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write fedge/protos/ under")
    generate(parser.parse_args().out)
    print(f"generated Python for {PROTO}", file=sys.stderr)


if __name__ == "__main__":
    main()
