"""bench/round_components.py reads a round's components from fedge's own log lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.round_components import components, medians

SERVER = """\
2026-12-01 04:04:40,000 S [round.opened] round 1: training on 2 device(s)
2026-12-01 04:04:44,500 S [round.committed] round 1 committed: 2 client(s), 3.85 s
2026-12-01 04:04:44,750 S [round.opened] round 2: training on 2 device(s)
2026-12-01 04:04:46,000 S [round.evaluated] round 1 evaluated: accuracy 0.1, loss 2.3 (1.25 s)
2026-12-01 04:04:48,000 S [round.committed] round 2 committed: 2 client(s), 3.25 s
"""
CLIENT = """\
2026-12-01 04:04:44,000 C [x] dev-0: round 1 update sent (update accepted, loss 2.4)
2026-12-01 04:04:44,400 C [x] dev-1: round 1 update sent (update accepted, loss 2.4)
2026-12-01 04:04:47,900 C [x] dev-1: round 2 update sent (update accepted, loss 2.4)
"""


def test_components_from_the_logs(tmp_path: Path) -> None:
    (tmp_path / "fedge-server.log").write_text(SERVER)
    (tmp_path / "fedge-client-0.log").write_text(CLIENT)
    rows = components(tmp_path)
    assert rows[1]["last_update_to_commit_s"] == pytest.approx(0.1)  # the last device's
    assert rows[1]["commit_to_open_s"] == pytest.approx(0.25)
    assert rows[1]["evaluation_s"] == 1.25
    assert rows[2] == {"last_update_to_commit_s": pytest.approx(0.1)}
    assert medians(rows)["commit_to_open_s"] == pytest.approx(0.25)
