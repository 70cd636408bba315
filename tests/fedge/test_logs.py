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
