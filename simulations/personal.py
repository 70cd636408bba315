"""The report's ``personalization`` entry: the devices' held-out accuracy of the final
global model against their personalized models, as each device reported it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def personalization_block(state_dir: str | Path, round_: int, mode: str,
                          epochs: int) -> dict[str, Any]:
    """What the devices reported after personalizing the model of round_: the mean
    held-out accuracy personalized and global (each device's slice counts once), and
    the devices that took part or could not."""
    from fedge.server.store import StateStore

    store = StateStore(state_dir)
    try:
        personal = store.metric_values(round_, "device", "personal_accuracy")
        global_ = store.metric_values(round_, "device", "global_accuracy")
        examples = store.metric_values(round_, "device", "holdout_examples")
        skipped = store.metric_values(round_, "device", "personal_skipped")
    finally:
        store.close()
    devices = sorted(set(personal) & set(global_))
    mean_personal = sum(personal[d] for d in devices) / len(devices) if devices else None
    mean_global = sum(global_[d] for d in devices) / len(devices) if devices else None
    return {
        "mode": mode, "epochs": epochs, "round": round_, "devices": len(devices),
        "skipped": len(skipped),
        "holdout_examples": int(sum(examples.get(d, 0.0) for d in devices)),
        "mean_personal_accuracy": mean_personal,
        "mean_global_accuracy": mean_global,
        "gain": (mean_personal - mean_global
                 if mean_personal is not None and mean_global is not None else None),
        "devices_improved": sum(personal[d] > global_[d] for d in devices),
        "per_device": {d: {"global": global_[d], "personal": personal[d]} for d in devices},
    }


def personalization_lines(report: dict[str, Any]) -> list[str]:
    """summary.md's personalization section (none when the run did not personalize)."""
    block = report.get("personalization")
    if not block or block["mean_personal_accuracy"] is None:
        return []
    lines = ["", "## Personalization", "",
             f"After round {block['round']}, {block['devices']} device(s) fine-tuned the "
             f"{'head' if block['mode'] == 'head' else 'whole model'} for "
             f"{block['epochs']} epoch(s) on their own data"
             + (f" ({block['skipped']} could not)" if block["skipped"] else "")
             + f"; mean accuracy on their held-out slices ({block['holdout_examples']} "
             "examples in all):", "", "| model | mean held-out accuracy |", "|---|---:|",
             f"| global | {block['mean_global_accuracy']:.4f} |",
             f"| personalized | {block['mean_personal_accuracy']:.4f} |", "",
             f"{block['devices_improved']} of {block['devices']} device(s) improved."]
    return lines


def personalization_line(report: dict[str, Any]) -> str | None:
    """The text table's personalization line (None when the run did not personalize)."""
    block = report.get("personalization")
    if not block or block["mean_personal_accuracy"] is None:
        return None
    return (f"personalization ({block['mode']}, {block['epochs']} epochs): mean held-out "
            f"accuracy {block['mean_personal_accuracy']:.4f} personalized vs "
            f"{block['mean_global_accuracy']:.4f} global on {block['devices']} device(s)")
