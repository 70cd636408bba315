"""Log output for every fedge command: readable text by default, or one JSON object per
line (``--log-format json``) for log shippers. Both carry the same event names.

A log call names its event with ``extra={"event": "round.committed", ...}``; any other
extra fields go into the JSON object as they are. Calls without one get an event made
from where they were logged (``logger.function``), so every line has one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

FORMATS = ("text", "json")
# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message",
                                                                            "asctime"}


def event_of(record: logging.LogRecord) -> str:
    """The record's event name: its explicit one, else logger.function."""
    explicit = getattr(record, "event", None)
    if explicit:
        return str(explicit)
    return f"{record.name}.{record.funcName.strip('_')}"


# Every control character (CR, LF, ESC, ...) but none of the printable ones.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape(text: str) -> str:
    """text with each control character written as an escape (``\\n``, ``\\x1b``):
    one message stays on one line whatever a device put in the strings it sent."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    """``TIME LEVEL logger [event] message``, one line per message: control characters
    in the message are escaped, so a device-supplied string cannot start a line of its
    own (a traceback, which is ours, still follows on its own lines)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(event_name)s] %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.event_name = event_of(record)
        record.message = escape(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, message and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": event_of(record),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in ("event", "event_name"):
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes each record to sys.stderr as it is then, not as it was when the handler
    was made: code that swaps stderr (a test's capture, a host program redirecting it)
    and later closes its stand-in must not leave every later log line on a closed file.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.setStream: stderr it stays
        pass


def configure(level: int, fmt: str = "text") -> None:
    """Sends fedge's logs to stderr at level, in fmt ("text" or "json")."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
