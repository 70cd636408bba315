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

from fedge.config.asynchronous import ASYNC, AsyncSettings
from fedge.config.client import ClientConfig
from fedge.config.privacy import PRIVACY, PrivacySettings
from fedge.config.relay import RelayConfig
from fedge.config.server import ServerConfig
from fedge.config.settings import Declared, declared
from fedge.config.simulate import BACKEND, SCENARIO, SimulateConfig
from fedge.config.strategy import STRATEGY, StrategySettings

Select = Callable[[Declared], bool]
# name: (the config class, which of its settings, whether the command takes --config)
TABLES: dict[str, tuple[type, Select, bool]] = {
    "server": (ServerConfig, lambda d: d.setting.group not in (STRATEGY, PRIVACY, ASYNC),
               True),
    "client": (ClientConfig, lambda d: True, True),
    "relay": (RelayConfig, lambda d: True, True),
    "simulate": (SimulateConfig, lambda d: d.setting.group in ("", BACKEND), True),
    "scenario": (SimulateConfig, lambda d: d.setting.group == SCENARIO, False),
    "strategy": (StrategySettings, lambda d: True, False),
    "privacy": (PrivacySettings, lambda d: True, False),
    "async": (AsyncSettings, lambda d: True, False),
}
BLOCK = re.compile(r"(<!-- settings: (?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- end settings -->)",
                   re.S)
# Commands with no settings class (their options are plain argparse ones): a table of
# the options of ``fedge WORDS``, between <!-- options: WORDS --> and <!-- end options -->.
OPTIONS = re.compile(r"(<!-- options: (?P<words>[a-z ]+) -->\n)(?P<body>.*?)(<!-- end options -->)",
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


def options_table(words: str) -> str:
    """The markdown table of the options of ``fedge WORDS`` (e.g. "tokens create"), read
    from the command line parser itself."""
    from fedge.cli.entry import build_parser

    parser = build_parser()
    for word in words.split():
        choices = next((a.choices for a in parser._actions
                        if isinstance(a, argparse._SubParsersAction)), None)
        if not choices or word not in choices:
            raise ValueError(f"no command 'fedge {words}'")
        parser = choices[word]
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest.upper()}`"
        if action.option_strings and action.nargs != 0:
            name += f" {action.metavar or action.dest.upper()}"
        if action.choices:
            name += " (" + " \\| ".join(str(c) for c in action.choices) + ")"
        shown = ("required" if action.required else
                 "" if action.default in (None, False) else f"`{action.default}`")
        lines.append(f"| {name} | {shown} | {_cell(action.help or '')} |")
    return "\n".join(lines) + "\n"


def rewrite(text: str) -> str:
    """text with every settings and options block replaced by its current table."""
    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in TABLES:
            raise ValueError(f"unknown settings table {name!r}; known: {', '.join(TABLES)}")
        return match[1] + table(name) + match[4]

    def fill_options(match: re.Match[str]) -> str:
        return match[1] + options_table(match["words"]) + match[4]

    return OPTIONS.sub(fill_options, BLOCK.sub(fill, text))


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
