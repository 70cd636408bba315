"""The canary gate without gRPC: the promotion rule (pure), who may be offered an
artifact at each stage, a decision at the deadline on the reports in hand, a halted
artifact kept halted across a restart, an operator's promote and rollback; and the
operator RPC behind `fedge edge rollback`, refused to devices."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fedge.cli import main
from fedge.server.app import FedgeServer
from fedge.server.registry import Device
from fedge.server.rollout import HALTED, PROMOTED, Rollout, decide
from fedge.server.store import StateStore


def _report(new: float, old: float | None, n: float = 10, **extra: float) -> dict[str, float]:
    report = {"edge_installed": 1.0, "edge_accuracy": new, "edge_examples": n, **extra}
    if old is not None:
        report["edge_incumbent_accuracy"] = old
    return report


def test_the_rule_weighs_canaries_by_their_held_out_counts() -> None:
    # 0.80 over 30 and 0.95 over 10: 0.8375 against 0.85, within 0.02 of it.
    ok, why = decide({"a": _report(0.80, 0.85, 30), "b": _report(0.95, 0.85, 10)}, 0.02)
    assert ok and "0.8375 vs the incumbent's 0.8500 on 40 examples" in why
    assert not decide({"a": _report(0.80, 0.85, 30), "b": _report(0.95, 0.85, 10)}, 0.01)[0]
    rolled, why = decide({"a": _report(0.5, 0.9, edge_rolled_back=1.0),
                          "b": _report(0.9, 0.9)}, 0.5)
    assert not rolled and "1 canary(ies) rolled back by themselves" in why
    assert not decide({"a": {"edge_refused": 1.0}}, 0.5)[0]
    assert not decide({}, 0.5)[0]
    assert decide({"a": _report(0.1, None)}, 0.0)[0]  # nothing installed before: nothing lost


def _devices(*names: str) -> list[Device]:
    return [Device(name, "", 0, authenticated=True) for name in names]


def test_stages_deadline_restart_and_operator(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    settled: list[tuple[int, bool]] = []
    gate = Rollout(0.5, 0.02, 0.3, 0.1, 0, store, lambda r, p: settled.append((r, p)))
    gate.begin(5, _devices("a", "b", "c", "d"))
    canaries = gate.snapshot()["canaries"]
    others = sorted(set("abcd") - set(canaries))
    assert len(canaries) == 2 and gate.pending()
    assert all(gate.allows(c, 5) and gate.is_canary(c, 5) for c in canaries)
    assert not any(gate.allows(o, 5) for o in others)
    gate.report(canaries[0], 5, _report(0.5, 0.9))
    assert gate.pending()  # one canary is still to report
    time.sleep(0.35)
    assert not gate.pending()  # judged at the deadline on the one report in hand
    assert settled == [(5, False)] and gate.snapshot()["stage"] == HALTED
    assert "1 of 2 canaries reported" in gate.snapshot()["reason"]
    assert not any(gate.allows(d, 5) for d in "abcd")
    running = Device(canaries[0], "", 0, edge_model="5")
    view = gate.rollback_view(running)
    assert view is not None and view.kind == "ROLLBACK" and view.model_version == 5
    assert gate.rollback_view(running) is None  # told once

    again = Rollout(0.5, 0.02, 0.3, 0.1, 0, store)  # a restarted server
    assert again.snapshot()["stage"] == HALTED and not again.allows(others[0], 5)
    again.operate("promote", "checked by hand")
    assert again.allows(others[0], 5)
    assert store.rollouts()[-1][1:3] == (PROMOTED, "by an operator: checked by hand")
    again.operate("rollback", "")
    assert not again.allows(others[0], 5) and store.rollouts()[-1][1] == HALTED
    # A server that restarts while an artifact is with its canaries keeps it from the
    # fleet (the canaries' reports are lost); one built before the gate is taken as is.
    again.begin(6, _devices("a", "b", "c", "d"))
    assert not again.allows("a", 7)  # a newer one: not offered before its canaries are drawn
    third = Rollout(0.5, 0.02, 0.3, 0.1, 0, store)
    assert third.snapshot()["stage"] == HALTED and "restarted" in third.snapshot()["reason"]
    third.adopt(7)
    assert third.allows("a", 7) and store.rollouts()[-1][:2] == (7, PROMOTED)
    store.close()


def test_the_rollout_rpc_is_for_operators(make_server: Callable[..., FedgeServer],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    server = make_server(edge=True, canary_fraction=0.5)
    port = server.start()
    args = ["edge", "rollback", "--server", f"127.0.0.1:{port}", "--insecure", "--token"]
    device = server.tokens.create("cam-1")
    assert main([*args, device]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    operator = server.tokens.create("ops", role="operator")
    assert main([*args, operator]) == 2
    assert "no edge artifact has been rolled out" in capsys.readouterr().err
    gate = server.deployments.gate if server.deployments is not None else None
    assert gate is not None
    gate.begin(1, [])  # nobody to be a canary: promoted at once, and recorded
    assert gate.snapshot()["stage"] == PROMOTED
    assert main([*args, operator]) == 0
    assert "artifact of round 1: halted" in capsys.readouterr().out


def test_each_device_class_s_artifact_of_a_round_shares_one_canary_stage(
        tmp_path: Path) -> None:
    """Deployments builds a round's classes one after another and each build says the
    artifact is ready: the second begin() must not redraw the canaries or drop a report
    already in hand."""
    store = StateStore(tmp_path)
    gate = Rollout(0.5, 0.02, 60.0, 0.1, 0, store)
    gate.begin(3, _devices("a", "b", "c", "d"))
    canaries = gate.snapshot()["canaries"]
    gate.report(canaries[0], 3, _report(0.9, 0.9))
    gate.begin(3, _devices("a", "b", "c", "d", "e", "f"))  # the second class's build
    assert gate.snapshot()["canaries"] == canaries
    gate.report(canaries[1], 3, _report(0.9, 0.9))
    assert not gate.pending() and gate.snapshot()["stage"] == PROMOTED
    store.close()
