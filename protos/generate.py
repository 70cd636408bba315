"""Regenerates the Python code for fedge.proto: ``python -m fedge.protos.generate``.

The generated modules are committed; ``tests/protos/test_generated.py`` checks that
regenerating with the pinned grpcio-tools changes nothing.

Why grpcio-tools 1.68.1: the code protoc writes calls
``runtime_version.ValidateProtobufRuntimeVersion`` with the protobuf version protoc came
from, and every protobuf runtime refuses gencode newer than itself. Flower (flwr) accepts
protobuf 5.28 up to 6.x, so the gencode must be 5.28 or older: 1.68.1 is the newest
grpcio-tools whose protoc is 5.28 (5.28.1; 1.69 to 1.71 emit 5.29.0, 1.72 and later 6.x
or 7.x). The protobuf runtimes 6 and 7 accept older gencode (7 does not even warn), so
the same committed code runs on protobuf 5.28.1 and up, 6.x and 7.x
(``tests/protos/test_stubs.py``, run on both lines). The grpc stubs, likewise, refuse a
grpcio older than the grpcio-tools that wrote them: hence grpcio>=1.68.1 in pyproject.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "fedge/protos/fedge.proto"  # through the fedge/protos link: imports say fedge.protos
GRPCIO_TOOLS = "1.68.1"  # pinned in pyproject's dev extra: see the module docstring


def tools_version() -> str:
    """The installed grpcio-tools version ("" when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grpcio-tools")
    except PackageNotFoundError:
        return ""


def generate(out_dir: Path) -> None:
    """Writes fedge_pb2.py, fedge_pb2.pyi and fedge_pb2_grpc.py under out_dir/fedge/protos."""
    from grpc_tools import protoc  # only needed by developers, not at run time

    if tools_version() != GRPCIO_TOOLS:
        # A newer protoc writes code that refuses the protobuf releases Flower needs.
        raise RuntimeError(
            f"grpcio-tools {tools_version()} is installed; the stubs are made with "
            f"{GRPCIO_TOOLS} (pip install grpcio-tools=={GRPCIO_TOOLS})"
        )
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
