"""A synthetic directory published with the CLI lands on its topics whole, keyed and in order."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from preaviso.devtools.worker import settings_env
from preaviso.settings import Settings
from preaviso.streams.lag import end_offsets_total
from tests.integration.helpers import cli, read_topic

pytestmark = pytest.mark.integration


def by_customer(values: list[bytes]) -> dict[bytes, list[bytes]]:
    grouped: dict[bytes, list[bytes]] = defaultdict(list)
    for value in values:
        grouped[json.loads(value)["customer_id"].encode()].append(value)
    return dict(grouped)


def test_a_synthetic_directory_is_published_whole(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=3, connect_timeout=5
    )
    path = tmp_path / "directory.jsonl"
    made = cli(settings, "synth", "--customers", "2000", "--out", str(path))
    assert made.returncode == 0, made.stderr
    lines = path.read_bytes().splitlines()
    expected = {
        "customers": [v for v in lines if b'"type":"CustomerUpserted"' in v],
        "ownerships": [v for v in lines if b'"type":"OwnershipRecorded"' in v],
    }
    assert len(expected["customers"]) == 2000

    result = cli(settings, "publish", str(path))

    assert result.returncode == 0, result.stderr
    assert f"published {len(lines)} event(s)" in result.stdout
    for name, values in expected.items():
        topic = settings.topic(name)
        assert asyncio.run(end_offsets_total(settings, topic)) == len(values), name
        records = read_topic(settings, name, len(values))
        # Keyed by customer, so each customer's records share a partition, in file order.
        got: dict[bytes, list[bytes]] = defaultdict(list)
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            got[r.key].append(r.value)
        assert dict(got) == by_customer(values), name


PEAK_RSS = """
import resource, sys
from preaviso.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exit:
    print(f"peak-rss-kib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
    raise
"""


def test_publishing_ten_times_the_events_keeps_memory_flat(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=3, connect_timeout=5
    )
    peaks = []
    for customers in (5_000, 50_000):  # about 20,000 and 200,000 events
        path = tmp_path / f"directory-{customers}.jsonl"
        made = cli(settings, "synth", "--customers", str(customers), "--out", str(path))
        assert made.returncode == 0, made.stderr
        result = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, "publish", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, **settings_env(settings)},
            timeout=240,
        )
        assert result.returncode == 0, result.stderr
        peaks.append(int(result.stderr.split("peak-rss-kib ")[1].split()[0]))
        path.unlink()
    # Holding 200,000 events in memory would cost hundreds of MB; streaming costs none.
    grown_mib = (peaks[1] - peaks[0]) / 1024
    print(f"peak RSS {peaks[0] / 1024:.0f} MiB → {peaks[1] / 1024:.0f} MiB", file=sys.stderr)
    assert grown_mib < 25, f"peak RSS grew by {grown_mib:.0f} MiB"
