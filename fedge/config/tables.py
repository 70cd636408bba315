"""The README's tables of settings, written from the declarations.

Each table sits in README.md between ``<!-- settings: NAME -->`` and
``<!-- end settings -->``. After adding or changing a setting, rewrite them with::

    python -m fedge.config.tables            # README.md in the current directory
    python -m fedge.config.tables --check    # exit 1 if they are not current

tests/docs/test_settings_tables.py fails while they are stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fedge.config.client import ClientConfig
from fedge.config.privacy import PRIVACY, PrivacySettings
from fedge.config.server import ServerConfig
from fedge.config.settings import Declared, declared
from fedge.config.simulate import BACKEND, SCENARIO, SimulateConfig
from fedge.config.strategy import STRATEGY, StrategySettings

Select = Callable[[Declared], bool]
# name: (the config class, which of its settings, whether the command takes --config)
TABLES: dict[str, tuple[type, Select, bool]] = {
    "server": (ServerConfig, lambda d: d.setting.group not in (STRATEGY, PRIVACY), True),
    "client": (ClientConfig, lambda d: True, True),
    "simulate": (SimulateConfig, lambda d: d.setting.group in ("", BACKEND), True),
    "scenario": (SimulateConfig, lambda d: d.setting.group == SCENARIO, False),
    "strategy": (StrategySettings, lambda d: True, False),
    "privacy": (PrivacySettings, lambda d: True, False),
}
BLOCK = re.compile(r"(<!-- settings: (?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- end settings -->)",
                   re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def row(d: Declared) -> str:
    """One setting as a table row: option, key, default, meaning."""
    option = f"`{d.flag}`" if d.flag else ""
    # A default derived from the value, or a declared number, is a literal; else words.
    literal = d.shown and (d.setting.shown is None or _is_number(d.shown))
    default = f"`{d.shown}`" if literal else d.shown
    return f"| {option} | `{d.name}` | {_cell(default)} | {_cell(d.setting.help)} |"


def table(name: str) -> str:
    """The markdown table of one group of settings: options first, then file-only keys."""
    cls, select, has_config = TABLES[name]
    rows = [d for d in declared(cls) if select(d)]
    rows.sort(key=lambda d: d.flag is None)
    lines = ["| option | key | default | meaning |", "|---|---|---|---|"]
    if has_config:
        lines.append("| `--config FILE` | | | TOML file of these settings |")
    lines += [row(d) for d in rows]
    return "\n".join(lines) + "\n"


def rewrite(text: str) -> str:
    """text with every settings block replaced by its current table."""
    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in TABLES:
            raise ValueError(f"unknown settings table {name!r}; known: {', '.join(TABLES)}")
        return match[1] + table(name) + match[4]

    return BLOCK.sub(fill, text)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrites the README's tables (or, with --check, says whether they are current)."""
    parser = argparse.ArgumentParser(prog="python -m fedge.config.tables",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("readme", nargs="?", default="README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is stale")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text()
    new = rewrite(text)
    if args.check:
        if new != text:
            print(f"{path}: the settings tables are stale; run python -m fedge.config.tables",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
