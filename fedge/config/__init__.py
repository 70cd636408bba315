"""Typed, validated configuration for the server, the client daemon and the simulator.

Each component's settings are a frozen dataclass whose fields are declared once, with
their help, option spelling and checks (fedge.config.settings). Values come, lowest
precedence first, from the declared defaults, a TOML file (top-level keys named as the
fields), and command-line options. Errors name the key and the value expected.
"""

from fedge.config.client import ClientConfig
from fedge.config.loading import build, load, read_toml
from fedge.config.server import NORM_ACTIONS, ServerConfig
from fedge.config.simulate import ATTACKS, BACKENDS, DELAYS, PARTITIONS, SimulateConfig
from fedge.config.strategy import (
    ENCODINGS,
    STRATEGIES,
    UPDATES,
    LocalTraining,
    StrategySettings,
    check_strategy,
)

__all__ = ["ATTACKS", "BACKENDS", "DELAYS", "ENCODINGS", "NORM_ACTIONS", "PARTITIONS",
           "STRATEGIES", "UPDATES", "ClientConfig", "LocalTraining", "ServerConfig",
           "SimulateConfig", "StrategySettings", "build", "check_strategy", "load",
           "read_toml"]
