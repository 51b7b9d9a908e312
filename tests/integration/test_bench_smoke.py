"""The benchmark harness, run tiny against the real broker: sane figures, nothing lost.

Not a benchmark: it proves ``./dev bench`` still measures and still counts right, so
the suite does not rot between the times someone runs it. The mails the sink saw are
checked against ``tests/oracle.py``, not against the harness's own expectation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench import suite
from bench.directory import generate
from bench.plan import MODES
from preaviso.devtools.dataset import policy_for_everyone
from preaviso.settings import Settings
from tests.oracle import expected_mails

pytestmark = pytest.mark.integration

POSITIVE = (
    "load.preaviso", "load.raw", "e2e.c1.preaviso", "e2e.c1.raw", "fanout.preaviso",
    "fanout.raw", "notify.c1", "naive", "naive.placeholder", "latency.p50_s", "latency.p99_s",
    "rss.load_mb", "rss.peak_mb", "cpu.c1.worker", "cpu.c1.total", "cpu.c1.bare_sender",
    "cpu.c1.bare_total", "cpu.c1.ceiling", "cpu.c1.sending_ceiling", "cpu.naive.script",
    "cpu.naive.total",
)  # fmt: skip


def test_smoke_run_measures_and_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    plan = MODES["smoke"]
    began = time.monotonic()
    data = suite.run_suite(plan, bootstrap=kafka_bootstrap, work=tmp_path, say=lambda _: None)
    assert time.monotonic() - began < 60

    figures = data["runs"][0]["figures"]
    assert {k: figures.get(k, 0) for k in POSITIVE if figures.get(k, 0) <= 0} == {}
    assert figures["latency.p50_s"] < 30
    assert not any(data["checks"].values()), data["checks"]

    [(event_id, counts)] = data["sink_counts"][0].items()
    directory = generate(plan.customers, plan.seed)
    change = policy_for_everyone(event_id).model_dump(mode="json")
    expected = expected_mails(
        [c.model_dump(mode="json") for c in directory.customers],
        [o.model_dump(mode="json") for o in directory.ownerships],
        change,
        Settings().message_id_domain,
    )
    assert len(expected) == plan.customers
    assert counts == dict.fromkeys(expected, 1)

    written = suite.write(data, tmp_path / "docs", chart=False)
    assert sorted(p.name for p in written) == ["benchmarks.json", "benchmarks.md"]
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "directory load" in page
    assert "mails accepted, 1 connection" in page
    assert "sink_counts" not in json.loads((tmp_path / "docs" / "benchmarks.json").read_text())
