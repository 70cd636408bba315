"""The README's tables of settings are the declarations, as `python -m
fedge.config.tables` writes them: a setting added, changed or removed without rewriting
them fails here."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from fedge.config import ClientConfig, ServerConfig, SimulateConfig
from fedge.config.settings import declared
from fedge.config.tables import TABLES, options_table, rewrite, table

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_tables_are_current() -> None:
    text = README.read_text()
    assert rewrite(text) == text, ("the README's settings tables are stale: run "
                                   "python -m fedge.config.tables")


def test_each_table_is_in_the_readme_once() -> None:
    names = re.findall(r"<!-- settings: ([a-z]+) -->", README.read_text())
    assert sorted(names) == sorted(TABLES)


def test_every_field_is_declared_and_in_a_table() -> None:
    written = "\n".join(table(name) for name in TABLES)
    for cls in (ServerConfig, ClientConfig, SimulateConfig):
        names = {d.name for d in declared(cls)}
        assert names == {f.name for f in dataclasses.fields(cls)}, cls
        for name in names:
            assert f"| `{name}` |" in written, f"{cls.__name__}.{name} is in no table"


def test_a_stale_table_is_rewritten_and_checked(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- settings: strategy -->\n| old |\n<!-- end settings -->\n")
    command = [sys.executable, "-m", "fedge.config.tables", str(readme)]
    stale = subprocess.run([*command, "--check"], capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and "stale" in stale.stderr
    subprocess.run(command, check=True, timeout=60)
    assert "| `--mu` | `mu` | `0.01` |" in readme.read_text()
    assert subprocess.run([*command, "--check"], timeout=60).returncode == 0


def test_every_command_without_settings_has_its_options_table() -> None:
    # The commands whose options are plain argparse ones: each of their options is in the
    # README, read from the parser (a new option without a table row fails here).
    from fedge.cli.entry import build_parser

    words = set(re.findall(r"<!-- options: ([a-z ]+) -->", README.read_text()))
    assert {"status", "tokens create", "tokens list", "tokens revoke"} <= words
    assert "`--role` ROLE (device \\| operator)" in options_table("tokens create")
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert isinstance(commands, dict)
    status = commands["status"]
    for action in status._actions:
        for option in action.option_strings:
            assert option in ("-h", "--help") or f"`{option}`" in options_table("status")
