"""One declaration per setting: a config dataclass field carries, in its metadata, the
help text, the option's spelling, how its default is shown, and the checks on its value.

The dataclass field gives the name (= the TOML key), the type and the default; from the
same declaration the command line builds its option (fedge.cli.options), config files
are validated (fedge.config.loading) and the README's tables are written
(fedge.config.tables). So a setting is added, renamed or documented in one place::

    rounds: int = setting(10, "rounds to run", low=1)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fedge.errors import ConfigError

_KEY = "fedge.setting"


@dataclass(frozen=True)
class Setting:
    """What a config field declares beside its name, type and default.

    flag: the option's spelling; "" derives ``--name-with-dashes`` from the name, None
        makes the setting a config key without an option. A bool whose flag starts with
        ``--no-`` is turned off by its option.
    shown: the default as --help and the docs show it ("" shows none); None derives it.
    low, high: the bounds of a number (inclusive unless low_open/high_open).
    choices: the values a string may take.
    group: which part of a command it belongs to (an argparse group and a docs table).
    """

    help: str
    flag: str | None = ""
    shown: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    group: str = ""


def setting(default: Any = dataclasses.MISSING, help: str = "", *,
            factory: Callable[[], Any] | None = None, **declared: Any) -> Any:
    """A dataclass field declaring one setting (see Setting for the keywords)."""
    meta = {_KEY: Setting(help=help, **declared)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Declared:
    """One setting of a config class, as every consumer reads it."""

    name: str
    hint: Any  # the field's resolved type
    default: Any  # dataclasses.MISSING for a default made by a factory
    setting: Setting

    @property
    def flag(self) -> str | None:
        """The option's spelling, or None for a key without an option."""
        if self.setting.flag == "":
            return "--" + self.name.replace("_", "-")
        return self.setting.flag

    @property
    def kind(self) -> type:
        """The value's type, with an optional's None taken away (a tuple for lists)."""
        hint = self.hint
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        return tuple if typing.get_origin(hint) is tuple else typing.cast(type, hint)

    @property
    def shown(self) -> str:
        """The default as people read it ("" when there is nothing to show)."""
        if self.setting.shown is not None:
            return self.setting.shown
        value = self.default
        if value is dataclasses.MISSING or value is None or value == "" or value == ():
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}".replace("e+0", "e").replace("e+", "e")
        return str(value)


def declared(cls: type) -> Iterator[Declared]:
    """The declared settings of a config class: its own in field order, then those of
    its bases."""
    return iter(_declared(cls))


@functools.cache  # every config made checks its fields: resolve the hints once per class
def _declared(cls: type) -> tuple[Declared, ...]:
    hints = typing.get_type_hints(cls)
    own = inspect.get_annotations(cls)
    # A class's own settings first, then those it shares through its bases.
    return tuple(Declared(f.name, hints[f.name], f.default, f.metadata[_KEY])
                 for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own)
                 if _KEY in f.metadata)


def check_declared(config: Any) -> None:
    """Checks every declared bound and choice of a config, naming the key at fault."""
    for d in declared(type(config)):
        value = getattr(config, d.name)
        s = d.setting
        if value is None:
            continue
        if s.choices is not None and value not in s.choices:
            raise ConfigError(f"{d.name} must be one of {s.choices}, got {value!r}")
        if s.low is None and s.high is None:
            continue
        below = s.low is not None and (value <= s.low if s.low_open else value < s.low)
        above = s.high is not None and (value >= s.high if s.high_open else value > s.high)
        if below or above:
            raise ConfigError(f"{d.name} must be {bounds(s)}, got {value}")


def bounds(s: Setting) -> str:
    """A setting's bounds as words: ">= 1", "> 0", "in (0, 1]"."""
    if s.high is None:
        return f"{'>' if s.low_open else '>='} {_number(s.low)}"
    if s.low is None:
        return f"{'<' if s.high_open else '<='} {_number(s.high)}"
    return (f"in {'(' if s.low_open else '['}{_number(s.low)}, {_number(s.high)}"
            f"{')' if s.high_open else ']'}")


def _number(x: float | None) -> str:
    return f"{x:g}"


def check_range(key: str, value: float, low: float, high: float | None = None) -> None:
    """Checks a bound that depends on another setting (declared bounds are fixed)."""
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{key} must be {bound}, got {value}")


def check_tls(insecure: bool, has_tls: bool, who: str, flag: str) -> None:
    """Refuses both TLS and --insecure, and neither: plain text must be asked for."""
    if insecure and has_tls:
        raise ConfigError(f"the {who} was given both --insecure and {flag}; choose one")
    if not insecure and not has_tls:
        raise ConfigError(f"the {who} needs TLS ({flag}) or, for loopback development "
                          "only, --insecure")
