"""Scenarios: TOML files of simulation settings, built in under
``simulations/scenarios/`` or anywhere on disk.

A scenario is an ordinary ``fedge simulate`` config file (top-level keys named as the
SimulateConfig fields), read first: a ``--config`` file and then the command's flags
override it. Its first comment lines say what it models.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedge.config import SimulateConfig, build
from fedge.config.loading import read_toml
from fedge.errors import ConfigError

FOLDER = Path(__file__).parent / "scenarios"


def builtin() -> dict[str, Path]:
    """The built-in scenarios by name."""
    return {p.stem: p for p in sorted(FOLDER.glob("*.toml"))}


def describe(path: Path) -> str:
    """The scenario's description: its leading comment lines, joined."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)


def resolve(name: str) -> Path:
    """The file of a built-in scenario name, or name itself as a path to a TOML file."""
    known = builtin()
    if name in known:
        return known[name]
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"scenario file {name} does not exist")
        return path
    raise ConfigError(f"unknown scenario {name!r}; built-in: {', '.join(known)} "
                      "(or give the path of a TOML file)")



def load_simulation(scenario: str | None, config: str | None,
                    overrides: Mapping[str, Any]) -> SimulateConfig:
    """The settings of a run: the scenario's (if any), then the config file's, then the
    overrides (None values ignored), each checked with errors naming file and key."""
    values: dict[str, Any] = {}
    sources = []
    if scenario:
        path = resolve(scenario)
        values.update(read_toml(path))
        values.setdefault("scenario", path.stem)
        sources.append(str(path))
    if config:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file {config} does not exist")
        values.update(read_toml(path))
        sources.append(config)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        sources.append("options")
    values.update(given)
    return build(SimulateConfig, values, " + ".join(sources) or "options")
