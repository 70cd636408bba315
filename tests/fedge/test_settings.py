"""The setting declarations: one field says its name, type, default, help, option and
checks, and the checks name the key with the bound in words."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fedge.config import build
from fedge.config.settings import check_declared, declared, setting
from fedge.errors import ConfigError


@dataclass(frozen=True)
class Knobs:
    """A config with one setting of each shape."""

    share: float = setting(1.0, "a share", low=0, high=1, low_open=True)
    rate: float | None = setting(None, "a rate", shown="the model's", low=0, low_open=True)
    mode: str = setting("fast", "a mode", choices=("fast", "slow"))
    count: int = setting(3, "a count", flag="--n", low=1)
    hidden: float = setting(1e6, "a key without option", flag=None)
    on: bool = setting(True, "a switch", flag="--no-on")
    paths: tuple[str, ...] = setting((), "paths")

    def __post_init__(self) -> None:
        check_declared(self)


def test_a_declaration_gives_the_key_the_option_and_the_default_shown() -> None:
    rows = {d.name: (d.flag, d.kind, d.shown) for d in declared(Knobs)}
    assert rows == {"share": ("--share", float, "1"), "rate": ("--rate", float, "the model's"),
                    "mode": ("--mode", str, "fast"), "count": ("--n", int, "3"),
                    "hidden": (None, float, "1e6"), "on": ("--no-on", bool, "true"),
                    "paths": ("--paths", tuple, "")}


@pytest.mark.parametrize(("values", "message"), [
    ({"share": 0.0}, "share must be in (0, 1], got 0.0"),
    ({"share": 1.5}, "share must be in (0, 1], got 1.5"),
    ({"rate": 0.0}, "rate must be > 0, got 0.0"),
    ({"mode": "slowest"}, "mode must be one of ('fast', 'slow'), got 'slowest'"),
    ({"count": 0}, "count must be >= 1, got 0"),
    ({"count": "3"}, "count must be an integer, got '3'"),
])
def test_checks_name_the_key_and_the_bound(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(Knobs, values, "knobs.toml")
    assert str(info.value) == f"knobs.toml: {message}"


def test_values_inside_the_bounds_and_an_unset_optional_pass() -> None:
    knobs = build(Knobs, {"share": 1, "rate": 0.5, "count": 1, "paths": "a"})
    assert (knobs.share, knobs.rate, knobs.paths) == (1.0, 0.5, ("a",))
    assert Knobs().rate is None
