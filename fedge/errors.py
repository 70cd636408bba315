"""The base of fedge's own exceptions: each carries a message a person can act on.

The CLI turns these into an exit code and one line on stderr; ``server/service.py``
turns the server's into gRPC status codes.
"""


class FedgeError(Exception):
    """An error with a message meant for the person running fedge."""


class ConfigError(FedgeError):
    """A config file or option with a missing, unknown or wrongly-typed value."""


class TaskError(FedgeError):
    """A task that cannot be found, loaded or used."""


class DataError(FedgeError):
    """Local data that cannot be read or does not fit the task's schema."""
