"""The benchmark's arithmetic: medians, spreads, per-run ratios, targets, profile folding."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profile import package, top
from bench.results import Row, spread_text, summarize
from bench.suite import kept_because


def test_ratios_are_per_run_then_their_median() -> None:
    runs = [
        {"figures": {"x": 100.0, "raw": 1000.0}},
        {"figures": {"x": 300.0, "raw": 1000.0}},
        {"figures": {"x": 200.0, "raw": 400.0}},
    ]
    [entry] = summarize(runs, [Row("x", "x", "rec/s", "raw", "raw", target=0.25)])
    assert entry["value"] == {"median": 200.0, "min": 100.0, "max": 300.0}
    assert entry["ratio"] == {"median": 0.3, "min": 0.1, "max": 0.5}
    assert entry["met"] is True


def test_a_value_to_stay_under_and_a_missing_figure() -> None:
    runs = [{"figures": {"lat": 1.5}}, {"figures": {}}]
    lat, gone = summarize(
        runs, [Row("lat", "lat", "s", target=1.0, at_most=True), Row("gone", "g", "s")]
    )
    assert lat["met"] is False
    assert gone["value"] is None
    assert spread_text(gone["value"]) == "\N{EN DASH}"


def test_profile_folds_samples_per_function_package_and_project_function(tmp_path: Path) -> None:
    stacks = tmp_path / "profile.txt"
    stacks.write_text(
        "MainThread;worker (preaviso/cli.py:10);handle (preaviso/agents/notify.py:5);"
        "write (asyncio/selector_events.py:1) 3\n"
        "MainThread;worker (preaviso/cli.py:10);handle (preaviso/agents/notify.py:7) 1\n"
    )
    found = top(stacks)
    assert found.samples == 4
    assert found.own[0].function == "write (asyncio/selector_events.py)"
    assert found.own[0].share == pytest.approx(0.75)
    assert [(c.function, c.share) for c in found.ours] == [
        ("handle (preaviso/agents/notify.py)", 1.0)
    ]
    assert package("write (asyncio/selector_events.py)") == "asyncio"
    assert package("uuid4 (uuid.py)") == "(stdlib)"


@pytest.mark.parametrize(
    ("checks", "profiles", "asked", "reason"),
    [
        ({"e2e.c4.missing": 0}, {}, False, None),
        ({"e2e.c4.missing": 0}, {}, True, "--keep-work"),
        ({"e2e.c4.missing": 3}, {}, False, "a check failed"),
        ({"e2e.c4.missing": 0}, {"deliver": {"file": "p.txt"}}, False, "the profiles are in it"),
    ],
)
def test_a_work_dir_stays_only_when_asked_or_when_it_holds_evidence(
    checks: dict[str, int], profiles: dict[str, object], asked: bool, reason: str | None
) -> None:
    data = {"checks": checks, "profiles": profiles}
    assert kept_because(data, asked=asked) == reason
