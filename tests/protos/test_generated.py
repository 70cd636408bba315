"""The committed generated code is exactly what grpcio-tools makes of fedge.proto."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedge.protos.generate import GRPCIO_TOOLS, ROOT, generate, tools_version

GENERATED = ("fedge_pb2.py", "fedge_pb2.pyi", "fedge_pb2_grpc.py")


def test_regenerating_changes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    if tools_version() != GRPCIO_TOOLS:
        pytest.skip(f"grpcio-tools {tools_version()} here, the stubs are {GRPCIO_TOOLS}'s")
    generate(tmp_path)
    for name in GENERATED:
        fresh = (tmp_path / "fedge" / "protos" / name).read_text()
        committed = (ROOT / "protos" / name).read_text()
        assert fresh == committed, f"protos/{name} is stale: run python -m fedge.protos.generate"


PICKLE_USE = re.compile(r"import pickle|from pickle|pickle\.|allow_pickle=True|torch\.load\(")


def test_no_pickle_anywhere_in_our_code() -> None:
    rooms = ("protos", "fedge", "server", "client", "edge", "simulations")
    sources = [p for room in rooms for p in (ROOT / room).rglob("*.py")]
    assert len(sources) > 10
    for path in sources:
        assert not PICKLE_USE.search(path.read_text()), f"{path} uses pickle"
