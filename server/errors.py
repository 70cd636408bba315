"""Why the server refuses a request. ``server/service.py`` maps each to a gRPC status."""

from fedge.errors import FedgeError


class Refused(FedgeError):
    """A request the server will not act on; the subclass says which status it gets."""


class UnknownSession(Refused):
    """The session id is not (or no longer) known: the device should join again."""


class InvalidRequest(Refused):
    """A malformed request or update: wrong task, shapes, dtypes, values or counts."""


class StaleRequest(Refused):
    """A request for a round or task that is not open any more (or not yet)."""


class Unsupported(Refused):
    """A feature the server was not configured for (an update kind or encoding)."""
