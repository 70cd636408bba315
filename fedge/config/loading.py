"""Reading settings: a TOML file (top-level keys named as the fields) under command-line
options, each value checked against its field's type, with errors that name the key."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from fedge.errors import ConfigError

C = TypeVar("C")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Checks value against a field's type hint, converting lists to tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {hint}, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value))
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{key} must be empty, got {value!r}")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported setting type {hint}")


def build(cls: type[C], values: Mapping[str, Any], source: str = "options") -> C:
    """Makes a config dataclass from values, naming any unknown or mistyped key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; known keys: "
                          f"{', '.join(names)}")
    try:
        coerced = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
        return cls(**coerced)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """A config file's top-level keys; a missing file, bad TOML or a [table] is an error."""
    try:
        values = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    nested = [k for k, v in values.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(f"{path}: unexpected table [{nested[0]}]; settings are "
                          "top-level keys")
    return values


def load(cls: type[C], path: str | Path | None, overrides: Mapping[str, Any]) -> C:
    """Reads a TOML file (if given) and applies overrides (None values are ignored)."""
    values = read_toml(path) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build(cls, values, "options" if path is None else str(path))
