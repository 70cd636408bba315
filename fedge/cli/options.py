"""Command-line options made from the config declarations (fedge.config.settings): each
declared setting with a flag becomes one option whose help ends with its default, and
the options a person gave become the overrides of a config file."""

from __future__ import annotations

import argparse
from collections.abc import Collection
from typing import Any

from fedge.config.settings import Declared, declared

# argparse group titles of the declared groups ("" is the command's own options).
GROUP_TITLES = {"strategy": "strategy and updates",
                "scenario": "scenarios (each also a config key)", "backend": "backends",
                "privacy": "differential privacy (docs/privacy.md)",
                "async": "asynchronous training (docs/async.md)"}


def help_of(d: Declared) -> str:
    """The option's help: the declaration's, then its default unless it is a switch."""
    if d.flag is not None and d.flag.startswith("--no-"):
        return f"do not {d.setting.help}"
    if d.kind is bool or not d.shown:
        return d.setting.help
    return f"{d.setting.help} (default: {d.shown})"


def add_config_option(p: argparse.ArgumentParser, what: str) -> None:
    """The --config FILE option of a command whose settings are declared."""
    p.add_argument("--config", metavar="FILE",
                   help=f"a TOML file of {what} settings (keys named as the options, with "
                   "underscores); options given here override it")


def add_settings(p: argparse.ArgumentParser, cls: type,
                 skip: Collection[str] = ()) -> None:
    """One option per declared setting of cls that has a flag; every one defaults to
    None, so that only the options given override the file and the defaults."""
    groups: dict[str, Any] = {}
    for d in declared(cls):
        if d.flag is None or d.name in skip:
            continue
        group = d.setting.group
        if group and group not in groups:
            groups[group] = p.add_argument_group(GROUP_TITLES.get(group, group))
        target = groups.get(group, p)
        if d.kind is bool:
            action = "store_false" if d.flag.startswith("--no-") else "store_true"
            target.add_argument(d.flag, dest=d.name, action=action, default=None,
                                help=help_of(d))
        elif d.kind is tuple:
            target.add_argument(d.flag, dest=d.name, action="append", help=help_of(d))
        else:
            target.add_argument(d.flag, dest=d.name, type=d.kind, help=help_of(d))


def given(args: argparse.Namespace, cls: type, skip: Collection[str] = ()) -> dict[str, Any]:
    """The declared settings of cls given on the command line, by key."""
    return {d.name: getattr(args, d.name) for d in declared(cls)
            if d.flag is not None and d.name not in skip
            and getattr(args, d.name, None) is not None}
