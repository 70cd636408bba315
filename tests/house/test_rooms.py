"""The house rules that keep the code navigable: arrows between rooms point down, and
no file grows past what a person reads in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("server", "client", "edge", "relay", "simulations")  # and bench (not installed)
MAX_LINES = 450
GENERATED = {"fedge_pb2.py", "fedge_pb2.pyi", "fedge_pb2_grpc.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _core_files() -> list[Path]:
    """fedge/ itself, without the rooms it links to, the CLI (the composition root,
    which may import everything) and the Flower adapters (fedge/flower: a Flower client
    as the daemon's trainer, fedge strategies in Flower's server; above the rooms)."""
    core = ROOT / "fedge"
    return [p for p in core.rglob("*.py")
            if not any(p.is_relative_to(core / room)
                       for room in (*ROOMS, "protos", "cli", "flower"))
            and p.name != "cli.py"]


def test_the_core_imports_nothing_above_it() -> None:
    files = _core_files()
    assert len(files) >= 8
    above = (*(f"fedge.{room}" for room in ROOMS), "bench")
    for path in files:
        bad = sorted(n for n in _imports(path) if n.startswith(above) or n in ROOMS)
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_server_and_client_never_import_each_other() -> None:
    for room, other in (("server", "client"), ("client", "server")):
        for path in (ROOT / room).rglob("*.py"):
            bad = sorted(n for n in _imports(path) if n.startswith(f"fedge.{other}"))
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_a_relay_sits_above_server_and_client_and_below_the_rest() -> None:
    # A relay composes the server and the client rooms; neither may reach back up to it,
    # and it reaches nothing above itself (simulations, the CLI, bench).
    for room in ("server", "client", "edge"):
        for path in (ROOT / room).rglob("*.py"):
            bad = sorted(n for n in _imports(path) if n.startswith("fedge.relay"))
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    for path in (ROOT / "relay").rglob("*.py"):
        bad = sorted(n for n in _imports(path)
                     if n.startswith(("fedge.simulations", "fedge.cli.", "bench"))
                     or n == "fedge.cli")
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_flower_adapters_keep_to_their_side() -> None:
    # The client adapter runs on devices, the strategies on servers: neither needs the other.
    flower = ROOT / "fedge" / "flower"
    for name, other in (("client.py", "fedge.server"), ("strategy.py", "fedge.client")):
        bad = sorted(n for n in _imports(flower / name) if n.startswith(other))
        assert not bad, f"fedge/flower/{name} imports {bad}"


def test_the_edge_runtime_imports_no_build_side() -> None:
    for path in (ROOT / "edge" / "runtime").rglob("*.py"):
        bad = sorted(n for n in _imports(path)
                     if n.startswith(("fedge.edge.compiler", "torch", "fedge.server",
                                      "fedge.client")))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_no_file_is_over_the_line_limit() -> None:
    rooms = ("fedge", *ROOMS, "protos", "bench", "tests", "examples")
    # rglob does not descend into fedge/'s links, so each room is read once.
    files = [p for room in rooms for p in (ROOT / room).rglob("*.py")
             if p.name not in GENERATED]
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_no_room_is_imported_by_its_bare_name() -> None:
    rooms = ("fedge", *ROOMS, "protos", "bench", "tests", "examples")
    for room in rooms:
        for path in (ROOT / room).rglob("*.py"):
            if path.name in GENERATED:
                continue
            bare = sorted(n for n in _imports(path)
                          if n.split(".")[0] in (*ROOMS, "protos"))
            assert not bare, f"{path.relative_to(ROOT)} imports {bare}: use fedge.<room>"
