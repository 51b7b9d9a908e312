"""One worker, kill -9 in the middle of a big delivery, restart: count what went missing.

The experiment behind docs/faust-recovery-bug.md and the kill -9 rows of
docs/reliability.md, at the size of the issue that found the bug:

    .venv/bin/python bench/kill_restart.py --runs 3                     # the fixed worker
    .venv/bin/python bench/kill_restart.py --runs 3 --faust-unfixed     # Faust as released
    .venv/bin/python bench/kill_restart.py --data-dir same --at 0.7

It starts its own Kafka broker and mail catcher, publishes a directory, then one
policy change for every customer; when ``--at`` of the mails are out it kills the
worker (SIGKILL) and starts another with the same or an empty data dir. Per run it
prints delivered, missing and duplicate Message-IDs at the SMTP server, the seconds
from the kill to the next mail, and, for missing notices, where they sit on the
``notices`` topic. Exits 1 if any run lost a notice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.stack import local_settings
from preaviso.devtools import dataset
from preaviso.devtools.catcher import CatcherProcess
from preaviso.devtools.dataset import policy_for_everyone
from preaviso.devtools.kafka import LocalKafka
from preaviso.devtools.observe import MailBox
from preaviso.devtools.worker import WorkerProcess
from preaviso.publish import publish
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.kafka import client_options
from preaviso.streams.lag import wait_idle


async def missing_by_partition(settings: Settings, caught: set[str]) -> dict[int, list[int]]:
    """Offsets on ``notices`` of the notices whose Message-ID never reached the server."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        topic = settings.topic(t.NOTICES.name)
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        missing: dict[int, list[int]] = defaultdict(list)
        seen = 0
        while seen < sum(end.values()):
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    seen += 1
                    message_id = json.loads(record.value)["message_id"].strip("<>")
                    if message_id not in caught:
                        missing[record.partition].append(record.offset)
        return missing
    finally:
        await consumer.stop()


def one_run(args: argparse.Namespace, run: int, kafka: LocalKafka, out: Path) -> int:
    people, owned = dataset.directory(args.customers, seed=run)
    with CatcherProcess(out / "mail") as catcher:
        settings = local_settings(
            kafka.bootstrap, catcher, f"kill{run}.", args.partitions, out / "data-1"
        )
        fix = not args.faust_unfixed
        worker = WorkerProcess(settings, out / "worker-1.log", faust_fix=fix).start()
        asyncio.run(publish(settings, [*people, *owned]))
        loaded = [settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
        asyncio.run(wait_idle(settings, loaded, within=600))
        asyncio.run(publish(settings, [policy_for_everyone(f"kill-{run}")]))
        box = MailBox(out / "mail")
        while sum(box.counts().values()) < args.at * len(people):
            time.sleep(0.05)
            box.scan()
        worker.kill()
        killed = time.time()
        if args.data_dir == "empty":
            settings = settings.model_copy(update={"data_dir": out / "data-2"})
        worker = WorkerProcess(settings, out / "worker-2.log", faust_fix=fix).start()
        quiet_since, last = time.monotonic(), -1
        while time.monotonic() - quiet_since < args.settle:
            time.sleep(0.25)
            box.scan()
            total = sum(box.counts().values())
            if total != last:
                quiet_since, last = time.monotonic(), total
        worker.stop()
        counts: Counter[str] = box.counts()
        first = box.first_after(killed, counts)
        lost = len(people) - len(counts)
        duplicates = sum(n - 1 for n in counts.values())
        resumed = f"{first - killed:.1f}" if first else "never"
        print(
            f"run {run}: delivered {len(counts)}/{len(people)}, missing {lost}, "
            f"duplicates {duplicates}, first mail {resumed}s after the kill",
            flush=True,
        )
        if lost:
            where = asyncio.run(missing_by_partition(settings, set(counts)))
            for partition, offsets in sorted(where.items()):
                span = f"{min(offsets)}..{max(offsets)}"
                print(f"  notices[{partition}]: {len(offsets)} missing, offsets {span}")
        return lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--at", type=float, default=0.3, help="kill when this share is out")
    parser.add_argument("--data-dir", choices=("empty", "same"), default="empty")
    parser.add_argument("--settle", type=float, default=30.0, help="quiet seconds that end a run")
    parser.add_argument("--faust-unfixed", action="store_true", help="Faust as released")
    args = parser.parse_args()
    kafka = LocalKafka().start()
    try:
        lost = [
            one_run(args, run, kafka, Path(tempfile.mkdtemp(prefix=f"preaviso-kill-{run}-")))
            for run in range(1, args.runs + 1)
        ]
    finally:
        kafka.stop()
    bad = sum(1 for n in lost if n)
    print(f"{args.runs} run(s), {bad} with missing notices, {sum(lost)} missing in all")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
