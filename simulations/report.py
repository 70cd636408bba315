"""The run report: ``OUT/report.json``, the same record as a table and as
``OUT/summary.md``, and (with matplotlib) ``OUT/accuracy.png``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedge.errors import FedgeError
from fedge.server.store import RoundRecord
from fedge.simulations.personal import personalization_line, personalization_lines

if TYPE_CHECKING:
    from fedge.client.daemon import Daemon

log = logging.getLogger(__name__)


def build_report(task: str, clients: int, records: list[RoundRecord],
                 seconds_total: float, **extra: Any) -> dict[str, Any]:
    """The report of a run from its committed rounds (round 0, the initial model, is
    left out of the per-round list)."""
    rounds = [{"round": r.round, "accuracy": r.accuracy, "loss": r.loss,
               "clients": r.clients, "bytes_up": r.bytes_up, "bytes_down": r.bytes_down,
               "seconds": r.seconds, **({} if r.epsilon is None else {"epsilon": r.epsilon})}
              for r in records if r.round > 0]
    final = records[-1] if records else None
    return {
        "task": task,
        "clients": clients,
        "rounds": rounds,
        "final": {"accuracy": final.accuracy if final else None,
                  "loss": final.loss if final else None},
        "seconds_total": seconds_total,
        **extra,
    }


EDGE_KEYS = ("teacher_params", "student_params", "fp32_onnx_bytes", "int8_onnx_bytes",
             "teacher_accuracy", "student_fp32_accuracy", "int8_accuracy",
             "latency_ms_batch1_fp32", "latency_ms_batch1_int8")


def edge_block(state_dir: str | Path, round_: int,
               relay_dirs: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The report's ``edge`` entry: what the server measured building the artifact of
    round_, and what the devices reported after installing it (to the server, or to the
    relays whose state directories are relay_dirs)."""
    from fedge.edge.compiler.artifact import read_report
    from fedge.server.store import StateStore

    directory = Path(state_dir) / "edge" / f"round-{round_:06d}"
    classes = sorted(Path(state_dir).glob(f"edge/*/round-{round_:06d}/build.json"))
    if not (directory / "build.json").exists() and classes:
        directory = classes[0].parent  # a task with device classes: its first, by name
    if not (directory / "build.json").exists():
        raise FedgeError(f"the edge artifact of round {round_} was not built (see the log)")
    build = read_report(directory)
    accuracy: dict[str, float] = {}
    for where in (state_dir, *relay_dirs):
        store = StateStore(where)
        try:
            accuracy.update(store.metric_values(round_, "device", "edge_accuracy"))
        finally:
            store.close()
    block: dict[str, Any] = {k: build[k] for k in EDGE_KEYS}
    block["devices_installed"] = len(accuracy)
    block["device_accuracy_mean"] = (sum(accuracy.values()) / len(accuracy) if accuracy
                                     else None)
    block["artifact"] = str(directory)
    return block


def federated_rows(state_dir: str | Path) -> list[dict[str, Any]]:
    """The report's ``federated`` entry: per evaluated round, what the devices measured
    on their held-out slices (global and edge model), weighted by their counts."""
    from fedge.server.fleet_eval import columns, recorded
    from fedge.server.store import StateStore

    store = StateStore(state_dir)
    try:
        fed = recorded(store)
    finally:
        store.close()
    return [{"round": r, **columns(means)} for r, means in fed.items()]


def write_report(report: dict[str, Any], out: str | Path) -> Path:
    path = Path(out) / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def participation(records: list[RoundRecord]) -> list[dict[str, int]]:
    """Per committed round: devices sampled, updates reported, and the sampled devices
    that did not report (dropped out, left, too late or refused)."""
    return [{"round": r.round, "sampled": r.sampled, "reported": r.clients,
             "dropped": max(0, r.sampled - r.clients)} for r in records if r.round > 0]


def write_outputs(report: dict[str, Any], out: str | Path) -> None:
    """OUT/report.json, OUT/summary.md and, when matplotlib is installed,
    OUT/accuracy.png."""
    from fedge.simulations.plot import plot_report

    write_report(report, out)
    (Path(out) / "summary.md").write_text(format_summary(report))
    try:
        plot_report(report, Path(out) / "accuracy.png")
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("matplotlib"):
            raise
        log.warning("matplotlib is not installed: no accuracy.png (pip install "
                    "'fedge[sim]')")


def _rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-round entries merged with their participation (if recorded)."""
    by_round = {p["round"]: p for p in report.get("participation") or []}
    return [{**r, **by_round.get(r["round"], {})} for r in report["rounds"]]


def _final(report: dict[str, Any]) -> dict[str, float]:
    """The final accuracy and loss; NaN for a run that stopped before its first commit."""
    final: dict[str, float] = report["final"]
    if final["accuracy"] is None:
        return {"accuracy": float("nan"), "loss": float("nan")}
    return final


def _num(value: float | None) -> str:
    """A round's accuracy or loss, "-" for a round that was not evaluated (--eval-every)."""
    return "-" if value is None else f"{value:.4f}"


def format_summary(report: dict[str, Any]) -> str:
    """The run as a short Markdown page: settings, final accuracy, the per-round table
    and the edge block."""
    final = _final(report)
    settings = {k: report.get(k) for k in ("scenario", "task", "clients", "backend", "hosts",
                                           "partition", "alpha", "strategy", "update",
                                           "encoding", "seed")}
    lines = [f"# fedge simulation{': ' + report['scenario'] if report.get('scenario') else ''}",
             "", f"Final accuracy **{final['accuracy']:.4f}** (loss {final['loss']:.4f}) "
             f"after {len(report['rounds'])} rounds, {report['seconds_total']:.1f} s in all.",
             *(["", f"**The run stopped early:** {report['failure']}"]
               if report.get("failure") else []),
             *_privacy_lines(report),
             "", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in settings.items() if v is not None]
    active = {k: v for k, v in (report.get("conditions") or {}).items()
              if v not in (0, 0.0, [], "", None) and k not in (
                  "straggler_distribution", "join_round", "leave_round", "attack",
                  "attack_factor", "straggler_delay_s")}
    for k, v in active.items():
        lines.append(f"| {k} | {v} |")
    dp = bool(report.get("privacy"))
    lines += ["", "## Rounds", "",
              "| round | accuracy | loss | sampled | reported | dropped | bytes up | "
              "bytes down | seconds |" + (" epsilon |" if dp else ""),
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if dp else "")]
    for r in _rows(report):
        lines.append(f"| {r['round']} | {_num(r['accuracy'])} | {_num(r['loss'])} | "
                     f"{r.get('sampled', '')} | {r['clients']} | {r.get('dropped', '')} | "
                     f"{r['bytes_up']:,} | {r['bytes_down']:,} | {r['seconds']:.2f} |"
                     + (f" {r.get('epsilon', 0):.4g} |" if dp else ""))
    lines += _federated_lines(report)
    lines += personalization_lines(report)
    edge = report.get("edge")
    if edge:
        lines += ["", "## Edge model", "", "| | value |", "|---|---:|"]
        lines += [f"| {k} | {v if not isinstance(v, float) else f'{v:.4f}'} |"
                  for k, v in edge.items() if k != "artifact"]
        lines += ["", f"Artifact: `{edge['artifact']}`"]
    return "\n".join(lines) + "\n"


def _federated_lines(report: dict[str, Any]) -> list[str]:
    """The summary's table of federated evaluation (none without it)."""
    rows = report.get("federated")
    if not rows:
        return []
    lines = ["", "## Federated evaluation", "",
             "On the devices' held-out slices, weighted by their example counts.", "",
             "| round | accuracy | loss | examples | edge accuracy | edge loss | edge examples |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{r[f'{p}_{k}']:.4f}" if r[f"{p}_examples"] else "-"
                 for p in ("fed", "fed_edge") for k in ("accuracy", "loss")]
        lines.append(f"| {r['round']} | {cells[0]} | {cells[1]} | {r['fed_examples']} | "
                     f"{cells[2]} | {cells[3]} | {r['fed_edge_examples']} |")
    return lines


def _privacy_lines(report: dict[str, Any]) -> list[str]:
    """The summary's sentence on differential privacy (none without DP)."""
    privacy = report.get("privacy")
    if not privacy:
        return []
    target = (f" (target {privacy['target_epsilon']:g})" if privacy["target_epsilon"]
              else "")
    lines = ["", f"Differential privacy: {privacy['mode']}, noise multiplier "
             f"{privacy['noise_multiplier']:g}; **epsilon {privacy['epsilon']:.4g}** at delta "
             f"{privacy['delta']:.3g}{target}."]
    if report.get("ended_early"):
        lines.append(f"Training ended before its last round: {report['ended_early']}.")
    return lines


def format_table(report: dict[str, Any]) -> str:
    """The per-round record as an aligned text table with a summary line."""
    lines = [f"{'round':>5}  {'accuracy':>8}  {'loss':>7}  {'clients':>7}  "
             f"{'bytes up':>10}  {'bytes down':>10}  {'seconds':>7}"]
    for r in report["rounds"]:
        lines.append(f"{r['round']:>5}  {_num(r['accuracy']):>8}  {_num(r['loss']):>7}  "
                     f"{r['clients']:>7}  {r['bytes_up']:>10,}  {r['bytes_down']:>10,}  "
                     f"{r['seconds']:>7.2f}")
    final = _final(report)
    lines.append(f"task {report['task']}, {report['clients']} clients: final accuracy "
                 f"{final['accuracy']:.4f}, loss {final['loss']:.4f}, "
                 f"{report['seconds_total']:.1f} s in all")
    privacy = report.get("privacy")
    if privacy:
        lines.append(f"privacy: {privacy['mode']} DP, epsilon {privacy['epsilon']:.4g} at "
                     f"delta {privacy['delta']:.3g}"
                     + (f"; {report['ended_early']}" if report.get("ended_early") else ""))
    personal = personalization_line(report)
    if personal is not None:
        lines.append(personal)
    edge = report.get("edge")
    if edge:
        lines.append(f"edge: int8 student {edge['int8_onnx_bytes']:,} bytes (teacher fp32 "
                     f"{edge['fp32_onnx_bytes']:,}), accuracy int8 {edge['int8_accuracy']:.4f} "
                     f"teacher {edge['teacher_accuracy']:.4f}, installed on "
                     f"{edge['devices_installed']} device(s), on-device accuracy "
                     f"{edge['device_accuracy_mean'] or 0:.4f}")
    return "\n".join(lines)


def client_data(daemon: Daemon) -> dict[str, Any]:
    """What one client's last data scan found: examples, files read, and the corrupt
    files and bad records it skipped, by reason."""
    if daemon.data is None:
        return {"client": daemon.config.device_id, "examples": daemon.trainer.num_examples}
    inventory = daemon.data.inventory()
    skipped_files: dict[str, int] = {}
    skipped_records: dict[str, int] = {}
    for source in inventory.sources:
        for reason, n in source.files_skipped.items():
            skipped_files[reason] = skipped_files.get(reason, 0) + n
        for reason, n in source.records_skipped.items():
            skipped_records[reason] = skipped_records.get(reason, 0) + n
    return {"client": daemon.config.device_id, "examples": inventory.records,
            "files": inventory.files, "files_skipped": inventory.files_skipped,
            "records_skipped": inventory.records_skipped,
            "files_skipped_by_reason": skipped_files,
            "records_skipped_by_reason": skipped_records}
