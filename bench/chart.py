"""One picture of the gaps: throughput per stage, Preaviso against its raw baseline.

Log scale, because the gaps span orders of magnitude. matplotlib is imported here only,
and only ``./dev bench`` installs it (the [bench] extra): tests never need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.results import DASH, TIMES, number


def draw(summary: Sequence[dict[str, Any]], title: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [e for e in summary if e["stage"] and e.get("baseline") and e["value"]]
    fig, ax = plt.subplots(figsize=(10, 0.95 * len(stages) + 1.8))
    height = 0.38
    highest = 1.0
    for i, e in enumerate(reversed(stages)):
        for offset, spread, colour, name in (
            (height / 2, e["value"], "#d1495b", "Preaviso"),
            (-height / 2, e["baseline"], "#7a8b99", "raw baseline"),
        ):
            mid = spread["median"]
            err = [[mid - spread["min"]], [spread["max"] - mid]]
            ax.barh(i + offset, mid, height, xerr=err, color=colour, label=name if i == 0 else None,
                    error_kw={"elinewidth": 1, "capsize": 2})  # fmt: skip
            ax.text(spread["max"] * 1.15, i + offset, number(mid), va="center", fontsize=8)
            highest = max(highest, spread["max"])
    labels = [_label(e) for e in reversed(stages)]
    ax.set_yticks(range(len(stages)), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(10, highest * 4)
    ax.set_xlabel(f"per second, log scale (median of the runs; bars: min{DASH}max)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.25)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _label(e: dict[str, Any]) -> str:
    """Stage, ratio against the target, and what the baseline is."""
    target = f" (target {number(e['target'])}{TIMES})" if e["target"] else ""
    ratio = f"{number(e['ratio']['median'])}{TIMES}{target}"
    return f"{e['stage']}: {ratio}\n{e['unit']}; baseline: {e['baseline_label']}"
