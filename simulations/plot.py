"""``OUT/accuracy.png``: accuracy and loss per round, and the participation per round
(sampled, reported, dropped) when the run recorded it. Needs matplotlib (the ``sim``
extra); the caller skips the picture without it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def accuracy_limits(values: list[float]) -> tuple[float, float]:
    """The accuracy axis zoomed to the data: its range with a margin of a tenth of it (at
    least 0.01 each side), within 0..1, so that 0.95 against 0.97 is not a flat line at
    the top of a 0..1 axis."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    margin = max(0.1 * (high - low), 0.01)
    return max(0.0, low - margin), min(1.0, high + margin)


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Draws the report's rounds into a PNG at path (raises ModuleNotFoundError without
    matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window, never a display
    import matplotlib.pyplot as plt

    parts = report.get("participation") or []
    panels = 2 if parts else 1
    fig, axes = plt.subplots(panels, 1, figsize=(7, 3.2 * panels), squeeze=False)
    ax = axes[0][0]
    # Rounds not evaluated (--eval-every) have no point; the line joins those that do.
    measured = [r for r in report["rounds"] if r["accuracy"] is not None]
    ax.plot([r["round"] for r in measured], [r["accuracy"] for r in measured], "o-",
            color="tab:blue", label="accuracy")
    shown = [r["accuracy"] for r in measured]
    for key, style, label in (("fed", "^", "federated (devices' held-out)"),
                              ("fed_edge", "v", "federated, edge model")):
        fed = [f for f in report.get("federated") or [] if f[f"{key}_examples"]]
        if fed:  # beside the server-side accuracy, on the same axis
            ax.plot([f["round"] for f in fed], [f[f"{key}_accuracy"] for f in fed],
                    style + ":", label=label)
            shown += [f[f"{key}_accuracy"] for f in fed]
    if report.get("federated"):
        ax.legend(loc="lower center", fontsize="small")
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy", color="tab:blue")
    ax.set_ylim(*accuracy_limits(shown))
    loss = ax.twinx()
    loss.plot([r["round"] for r in measured], [r["loss"] for r in measured], "s--",
              color="tab:red", label="loss")
    loss.set_ylabel("loss", color="tab:red")
    title = report.get("scenario") or "default"
    final = report["final"]["accuracy"]  # None: stopped before its first evaluation
    ax.set_title(f"{report['task']}, {report['clients']} clients ({title}): final accuracy "
                 + ("none" if final is None else f"{final:.4f}"))
    if parts:
        ax2 = axes[1][0]
        x = [p["round"] for p in parts]
        ax2.bar(x, [p["reported"] for p in parts], color="tab:green", label="reported")
        ax2.bar(x, [p["dropped"] for p in parts], bottom=[p["reported"] for p in parts],
                color="tab:orange", label="dropped")
        ax2.plot(x, [p["sampled"] for p in parts], "k_", markersize=14, label="sampled")
        ax2.set_xlabel("round")
        ax2.set_ylabel("clients")
        ax2.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

