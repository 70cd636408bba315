"""fedge's log handler follows sys.stderr instead of holding on to the one it met."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from fedge.logs import configure


def test_logs_follow_stderr_even_after_a_stand_in_is_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        first = io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        configure(logging.INFO)  # made while stderr is the first stand-in
        logging.getLogger("fedge.test").info("one")
        assert "one" in first.getvalue()
        first.close()  # as a test's capture closes its own
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("fedge.test").info("two")
        assert "two" in second.getvalue()
        assert "Logging error" not in second.getvalue()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_a_text_log_message_stays_on_one_line_whatever_its_strings_hold() -> None:
    """A CR/LF (or an escape) in a device-supplied string cannot start a forged line."""
    import logging

    from fedge.logs import TextFormatter

    record = logging.LogRecord("fedge.server.service", logging.INFO, __file__, 1,
                               "device %s joined", ("dev\r\n2026 INFO round 99 committed"
                                                    "\x1b[2J\u2028",), None, "Join")
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line, line
    assert "\u2028" not in line
    assert line.endswith("joined")
    assert "dev\\r\\n2026 INFO round 99 committed\\x1b[2J\\u2028 joined" in line
