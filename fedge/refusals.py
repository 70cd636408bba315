"""Why the server refuses a request, and what each refusal means for the device.

One family of exceptions and one table. The server raises a refusal anywhere on its
request path; ``fedge.server.service`` turns it into the gRPC status its rule names and
sends the refusal's name in the trailing metadata (``fedge-refusal``). The daemon reads
that name back and looks up the same rule: whether its task for the round is settled
(the round does not wait for it, and the task takes nothing more) and whether it may
send the same request again after a backoff. Nothing else decides either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedge.errors import FedgeError

METADATA_KEY = "fedge-refusal"  # trailing metadata: the refusal's name


@dataclass(frozen=True)
class Rule:
    """What one kind of refusal means.

    status: the gRPC status code's name (``grpc.StatusCode[status]``).
    settles: refusing an update settles its device's task: the round stops waiting
        for it and that task accepts nothing more.
    retry: the daemon may send the same request again after a backoff (the refusal is
        about the server's load or state, not about what was sent).
    """

    status: str
    settles: bool
    retry: bool


# The table. Names travel on the wire: add rows, never rename one.
RULES: dict[str, Rule] = {
    "unauthenticated": Rule("UNAUTHENTICATED", settles=False, retry=False),
    "permission_denied": Rule("PERMISSION_DENIED", settles=False, retry=False),
    "unknown_session": Rule("NOT_FOUND", settles=False, retry=True),  # join again
    "conflict": Rule("ALREADY_EXISTS", settles=False, retry=True),  # old session expires
    "busy": Rule("RESOURCE_EXHAUSTED", settles=False, retry=True),
    "too_large": Rule("RESOURCE_EXHAUSTED", settles=True, retry=False),
    "corrupt": Rule("DATA_LOSS", settles=True, retry=False),
    "invalid_request": Rule("INVALID_ARGUMENT", settles=False, retry=False),
    "invalid_update": Rule("INVALID_ARGUMENT", settles=True, retry=False),
    "stale": Rule("FAILED_PRECONDITION", settles=False, retry=False),
    "already_settled": Rule("ALREADY_EXISTS", settles=True, retry=False),
    "unsupported": Rule("UNIMPLEMENTED", settles=False, retry=False),
    # The device already has an upload in flight (one at a time per device).
    "upload_in_progress": Rule("ABORTED", settles=False, retry=True),
    # A stream idle too long, or past its total time (or its round's deadline). The
    # server cuts it, so the device sees CANCELLED; the name is for the server's log.
    "stream_cut": Rule("DEADLINE_EXCEEDED", settles=False, retry=True),
    # A string, map or count a device sent past its limit, or a value out of its range.
    "over_limit": Rule("INVALID_ARGUMENT", settles=False, retry=False),
    # A resumed upload whose earlier part the server no longer holds (or holds up to
    # another byte): the device asks UploadOffset again and sends from there.
    "resume_lost": Rule("ABORTED", settles=False, retry=True),
    # Async mode: an update started from a model more than max_staleness versions old.
    "too_stale": Rule("FAILED_PRECONDITION", settles=True, retry=False),
}

# A refusal's message never grows with the input: it quotes at most QUOTE_CHARS of any
# value a device sent (quote()), and is cut at MESSAGE_CHARS whatever it holds.
QUOTE_CHARS = 64
MESSAGE_CHARS = 1000


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """repr() of at most limit characters of value, saying how long it was when cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"

# A server that sends no refusal name (an older one, or a status from gRPC itself):
# what the daemon assumes from the status code alone.
BY_STATUS: dict[str, Rule] = {
    "UNAVAILABLE": Rule("UNAVAILABLE", settles=False, retry=True),
    "DEADLINE_EXCEEDED": Rule("DEADLINE_EXCEEDED", settles=False, retry=True),
    "INTERNAL": Rule("INTERNAL", settles=False, retry=True),
    "UNKNOWN": Rule("UNKNOWN", settles=False, retry=True),
    "ABORTED": Rule("ABORTED", settles=False, retry=True),
    "CANCELLED": Rule("CANCELLED", settles=False, retry=True),
    "NOT_FOUND": RULES["unknown_session"],
    "ALREADY_EXISTS": RULES["conflict"],
    "RESOURCE_EXHAUSTED": RULES["busy"],
    "DATA_LOSS": RULES["corrupt"],
    "INVALID_ARGUMENT": RULES["invalid_update"],
    "FAILED_PRECONDITION": RULES["stale"],
    "UNAUTHENTICATED": RULES["unauthenticated"],
    "PERMISSION_DENIED": RULES["permission_denied"],
    "UNIMPLEMENTED": RULES["unsupported"],
}


def rule_for(status: str, name: str = "") -> Rule:
    """The rule of a refusal received as a status code name and, if the server sent
    one, a refusal name (an unknown name falls back to the status code)."""
    if name in RULES and RULES[name].status == status:
        return RULES[name]
    return BY_STATUS.get(status, Rule(status, settles=False, retry=False))


class Refused(FedgeError):
    """A request the server will not act on; the subclass's ``name`` picks its rule."""

    name: ClassVar[str] = "invalid_request"

    def __init__(self, message: str = "") -> None:
        if len(message) > MESSAGE_CHARS:
            message = message[:MESSAGE_CHARS] + "... (cut)"
        super().__init__(message)

    @property
    def rule(self) -> Rule:
        """This refusal's row of the table."""
        return RULES[self.name]


class Unauthenticated(Refused):
    """No token, or a token that is unknown, revoked or malformed."""

    name = "unauthenticated"


class PermissionDenied(Refused):
    """A valid token used for another device's identity or session."""

    name = "permission_denied"


class UnknownSession(Refused):
    """The session id is not (or no longer) known: the device should join again."""

    name = "unknown_session"


class Conflict(Refused):
    """The request clashes with live state: a device id in use by another session."""

    name = "conflict"


class Busy(Refused):
    """A limit on the server's load: uploads in flight, requests per second."""

    name = "busy"


class TooLarge(Refused):
    """An update over a size limit (whole stream or one chunk)."""

    name = "too_large"


class Corrupt(Refused):
    """Bytes that do not match their checksum: damaged in transit or tampered with."""

    name = "corrupt"


class InvalidRequest(Refused):
    """A malformed request outside an update: wrong task, ids, fields."""

    name = "invalid_request"


class InvalidUpdate(Refused):
    """An update whose content is refused: names, shapes, dtypes, values, counts, norm."""

    name = "invalid_update"


class EndedEarly(InvalidUpdate):
    """An update stream that ended before all of its bytes: refused like any invalid
    update when its device ended it, kept for a resume when the link broke
    (fedge.server.partial_uploads)."""


class StaleRequest(Refused):
    """A request for a round or task that is not open any more (or not yet)."""

    name = "stale"


class AlreadySettled(Refused):
    """An update for a task that already has its update, or had it refused."""

    name = "already_settled"


class Unsupported(Refused):
    """A feature the server was not configured for."""

    name = "unsupported"


class UploadInProgress(Refused):
    """A second update stream from a device whose first is still being received."""

    name = "upload_in_progress"


class StreamCut(Refused):
    """A stream the server cut: idle too long, or past its time limit."""

    name = "stream_cut"


class OverLimit(Refused):
    """A field over its limit: a string too long, a map with too many entries, a count
    or round out of range, a value that is not finite."""

    name = "over_limit"


class ResumeLost(Refused):
    """A resumed upload that does not start where the server's kept part of it ends."""

    name = "resume_lost"


class TooStale(Refused):
    """An asynchronous update whose starting model is more than max_staleness versions
    older than the current one: folding it would pull the model back."""

    name = "too_stale"
