"""Directory load: ownerships per second through the worker until its lag is zero.

The figure behind the "tables that scale" change (issue 7): every ownership passes
directory-ownerships (re-key by SKU) and directory-owners (the `owners` table). When
a SKU's value held all its owners, each write read and rewrote all of them, so the
rate fell as SKUs filled up; with one entry per (SKU, customer) it should not.

    PYTHONPATH=. .venv/bin/python bench/directory_load.py --ownerships 20000 --skus 100

It starts its own Kafka broker, a mail catcher (the worker checks SMTP at start-up)
and one worker, waits until the worker serves (one warm-up record read), then
publishes the ownerships (round-robin over the SKUs, one customer each) and times
from the start of the publish until the group's lag on the directory topics is 0.
It also reports the worker's CPU seconds over that span: on a shared machine the
wall time varies with other load, the CPU time much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import local_settings
from preaviso.devtools.catcher import CatcherProcess
from preaviso.devtools.kafka import LocalKafka
from preaviso.devtools.worker import WorkerProcess
from preaviso.publish import publish
from preaviso.schemas.events import OwnershipRecorded
from preaviso.streams import topics as t
from preaviso.streams.lag import wait_idle


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: a figure other load on the machine
    does not inflate, unlike the wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ownerships(count: int, skus: int, tag: str) -> list[OwnershipRecorded]:
    return [
        OwnershipRecorded(
            event_id=f"own-{tag}-{i}",
            source="bench",
            customer_id=f"C{i:08d}",
            sku=f"SKU-{i % skus:04d}",
            product_name=f"Product {i % skus}",
            purchase_date=date(2024, 1, 1),
        )
        for i in range(count)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ownerships", type=int, default=20_000)
    parser.add_argument("--skus", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="preaviso-dirload-"))
    directory = [s for s in t.DIRECTORY_TOPICS if s in (t.OWNERSHIPS, t.OWNERSHIPS_BY_SKU)]
    with LocalKafka() as kafka, CatcherProcess(out / "mail") as catcher:
        settings = local_settings(
            kafka.bootstrap, catcher, "dirload.", args.partitions, out / "data"
        )
        names = [settings.topic(s.name) for s in directory]
        with WorkerProcess(settings, out / "worker.log") as worker:
            asyncio.run(publish(settings, ownerships(1, 1, "warmup")))
            asyncio.run(wait_idle(settings, names, within=120))
            records = ownerships(args.ownerships, args.skus, "load")
            assert worker.proc is not None
            cpu = cpu_seconds(worker.proc.pid)
            started = time.perf_counter()
            asyncio.run(publish(settings, records))
            published = time.perf_counter() - started
            asyncio.run(wait_idle(settings, names, within=3600))
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(worker.proc.pid) - cpu
    print(
        f"{args.ownerships} ownerships on {args.skus} SKUs, {args.partitions} partitions: "
        f"published in {published:.1f} s, lag 0 after {elapsed:.1f} s, "
        f"{args.ownerships / elapsed:,.0f} ownerships/s; worker CPU {cpu:.1f} s, "
        f"{args.ownerships / cpu:,.0f} ownerships per CPU second (log {out / 'worker.log'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
