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


class Unauthenticated(Refused):
    """No token, or a token that is unknown, revoked or malformed."""


class PermissionDenied(Refused):
    """A valid token used for another device's identity or session."""


class Conflict(Refused):
    """The request clashes with existing state: a device id in use, a different update
    for a task that already has one."""


class Exhausted(Refused):
    """A limit was hit: update too large, too many uploads in flight, too many requests."""


class Corrupt(Refused):
    """Bytes that do not match their checksum: damaged in transit or tampered with."""
