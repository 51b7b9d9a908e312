"""Runs folded into figures: median and spread of each, its ratio to its baseline, the target.

The rows are declared once here (what each figure is compared with, and the issue's
target for the ratio), so the console, docs/benchmarks.md and the chart say the same.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TIMES = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"


@dataclass(frozen=True)
class Row:
    """One line of the table: a Preaviso figure, what it is compared with, and the target."""

    key: str  # figure key in each run's results
    label: str
    unit: str
    baseline: str | None = None  # key of the baseline figure (same run)
    baseline_label: str = ""
    target: float | None = None  # minimum ratio (or maximum value when ``at_most``)
    aim: float | None = None
    at_most: bool = False  # a value to stay under (latency, memory), not a ratio
    stage: str = ""  # chart label; empty: not drawn


def rows(connections: Sequence[int]) -> list[Row]:
    mails = [
        Row(
            f"e2e.c{c}.preaviso", f"mails accepted, {c} connection{'s' if c > 1 else ''}",
            "mails/s", f"e2e.c{c}.raw", f"bare aiosmtplib, same bytes, {c} conn.",
            target=0.5, aim=0.7, stage=f"delivery, {c} conn.",
        )
        for c in connections
    ]  # fmt: skip
    c = 4 if 4 in connections else connections[0]
    return [
        Row(
            "load.preaviso", "directory load (until the worker's lag is 0)", "records/s",
            "load.raw", "aiokafka consume → produce → commit", target=0.25, aim=0.5,
            stage="directory load",
        ),
        Row(
            "fanout.preaviso", "fan-out, policy for all customers", "impacts/s",
            "fanout.raw", "aiokafka producer, same records", target=0.5, stage="fan-out",
        ),
        Row(f"notify.c{c}", "notify (notices written)", "notices/s"),
        *mails,
        Row(
            f"e2e.c{c}.preaviso", f"mails accepted, {c} connections, vs a naive script",
            "mails/s", "naive", "the notice's text and HTML in an EmailMessage + new connection "
            "per mail", target=8.0,
            stage="vs naive script",
        ),
        Row(
            f"e2e.c{c}.preaviso", "the same, against the naive script's old placeholder mails",
            "mails/s", "naive.placeholder", "a two-line body, a sixth of a notice (to stop 23)",
        ),
        *(  # the target is the row above; these say where the connections take it
            Row(f"e2e.c{n}.preaviso", f"the same at {n} connection{'s' if n > 1 else ''}",
                "mails/s", "naive", "EmailMessage + new connection per mail")
            for n in connections
            if n != c
        ),
        Row(
            f"cpu.c{c}.total", f"CPU a mail, every process, {c} connections", "µs",
            f"cpu.c{c}.bare_total", "bare aiosmtplib and the sink",
        ),
        *(
            Row(f"cpu.c{c}.{name}", f"CPU a mail: {label}", "µs")
            for name, label in [
                ("worker", "the worker"), ("composing", "its composing child"),
                ("broker", "the Kafka broker"), ("sink", "the SMTP sink"),
            ]
        ),
        Row(f"cpu.c{c}.ceiling", f"mails/s with every core busy, {c} connections", "mails/s",
            f"cpu.c{c}.bare_ceiling", "bare aiosmtplib and the sink"),
        Row(f"cpu.c{c}.sending_ceiling", "the same, from the first mail on, vs naive",
            "mails/s", "naive", f"the naive script: 8{TIMES} its rate needs 8{TIMES} here"),
        Row("cpu.naive.total", "CPU a mail: the naive script and the sink", "µs"),
        Row("latency.p50_s", "publish → first mail accepted, p50", "s", target=1.0, at_most=True),
        Row("latency.p99_s", "publish → first mail accepted, p99", "s"),
        Row("rss.load_mb", "worker memory (RSS) after the load", "MB"),
        Row("rss.peak_mb", "worker memory, peak (VmHWM)", "MB"),
    ]  # fmt: skip


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        return cls(statistics.median(values), min(values), max(values)) if values else None

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


def summarize(runs: Sequence[dict[str, Any]], table: Sequence[Row]) -> list[dict[str, Any]]:
    """One entry per row: the figure's spread, its baseline's, and the per-run ratios'."""
    out = []
    for row in table:
        values = [r["figures"][row.key] for r in runs if row.key in r["figures"]]
        entry: dict[str, Any] = {"key": row.key, "label": row.label, "unit": row.unit}
        entry["value"] = _as_dict(Spread.of(values))
        if row.baseline:
            pairs = [
                (r["figures"][row.key], r["figures"][row.baseline])
                for r in runs
                if row.key in r["figures"] and r["figures"].get(row.baseline)
            ]
            entry["baseline"] = _as_dict(Spread.of([b for _, b in pairs]))
            entry["baseline_label"] = row.baseline_label
            entry["ratio"] = _as_dict(Spread.of([v / b for v, b in pairs]))
        entry["target"], entry["aim"], entry["at_most"] = row.target, row.aim, row.at_most
        entry["stage"] = row.stage
        entry["met"] = _met(entry, row)
        out.append(entry)
    return out


def _as_dict(spread: Spread | None) -> dict[str, float] | None:
    return spread.as_dict() if spread else None


def _met(entry: dict[str, Any], row: Row) -> bool | None:
    if row.target is None:
        return None
    if row.at_most:
        value = entry["value"]
        return None if value is None else value["median"] <= row.target
    ratio = entry.get("ratio")
    return None if ratio is None else ratio["median"] >= row.target


def checks(runs: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Every check summed over the runs: anything but 0 means lost, doubled or dead-lettered."""
    total: dict[str, int] = {}
    for run in runs:
        for name, value in run["checks"].items():
            total[name] = total.get(name, 0) + value
    return total


def number(value: float) -> str:
    """Readable at any size: 3 significant digits below 100, thousands separated above."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if 0 < value < 0.1:
        return f"{value:.2g}"  # a ratio of 0.0023 must not read as 0.00
    return f"{value:.2f}"


def spread_text(spread: dict[str, float] | None, suffix: str = "") -> str:
    if spread is None:
        return DASH
    mid, low, high = (number(spread[k]) for k in ("median", "min", "max"))
    return f"{mid}{suffix}" if low == high else f"{mid}{suffix} ({low}{DASH}{high})"


def target_text(entry: dict[str, Any]) -> str:
    target = entry["target"]
    if target is None:
        return ""
    if entry["at_most"]:
        text = f"≤ {number(target)} {entry['unit']}"
    else:
        aim = f" (aim {number(entry['aim'])}{TIMES})" if entry["aim"] else ""
        text = f"≥ {number(target)}{TIMES}{aim}"
    met = entry["met"]
    return f"{text} {'✓' if met else '✗' if met is False else '?'}"
