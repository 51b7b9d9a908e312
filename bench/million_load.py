"""A big directory through one worker: load time, memory, mails, and restart times.

Issue 7's scale figures: ``preaviso synth`` writes the directory, ``preaviso
publish`` sends it, one worker loads it (until its lag on the directory topics is
0) while its resident memory is sampled. With ``--mails``, the most-owned SKU is
discontinued and a policy reaches the regions closest to 200,000 customers, each
timed to its first and last mail at an SMTP sink; the expected counts come from
the generator's own tally, not from the worker. Then the worker is restarted with
its data dir kept, and again with an empty one (its tables recovered from the
changelogs), each timed until it serves a new record.

    PYTHONPATH=. .venv/bin/python bench/million_load.py --customers 1000000 --mails

Prints one line per phase as it ends, so a long run shows what it has so far.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import local_settings, proc_status_mb
from preaviso import synth
from preaviso.devtools import dataset
from preaviso.devtools.kafka import LocalKafka
from preaviso.devtools.sink import SinkControl, SinkProcess
from preaviso.devtools.worker import WorkerProcess, settings_env
from preaviso.publish import publish
from preaviso.schemas.events import CustomerUpserted, PolicyScope, UpstreamEvent
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.lag import wait_idle


class Sampler(threading.Thread):
    """The highest resident memory seen, sampled every second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.top, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.top = max(self.top, proc_status_mb(self.pid, "VmRSS"))
            except (FileNotFoundError, ProcessLookupError, LookupError):
                return


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def ready_after_start(settings: Settings, log: Path, names: list[str], tag: str) -> float:
    """Start a worker, publish one new customer, return seconds until it is handled."""
    started = time.perf_counter()
    worker = WorkerProcess(settings, log).start()
    try:
        probe = CustomerUpserted(
            customer_id=f"PROBE-{tag}", email=f"probe.{tag}@example.com", name="Probe",
            locale="en", region="ES-MD", source="bench",
        )  # fmt: skip
        asyncio.run(publish(settings, [probe]))
        asyncio.run(wait_idle(settings, names, within=3600))
        return time.perf_counter() - started
    finally:
        worker.stop()


def regions_near(regions: dict[str, int], target: int) -> list[str]:
    """The set of regions whose customers add up closest to ``target``."""
    names = sorted(regions)
    best: tuple[int, list[str]] = (target, [])
    for mask in range(1, 2 ** len(names)):
        chosen = [n for i, n in enumerate(names) if mask >> i & 1]
        gap = abs(sum(regions[n] for n in chosen) - target)
        if gap < best[0]:
            best = (gap, chosen)
    return best[1]


def time_mails(
    settings: Settings, sink: SinkControl, change: UpstreamEvent, expected: int, label: str
) -> None:
    """Publish ``change``; wait for ``expected`` distinct mails (or 2 min without one)."""
    sink.reset()
    began = time.time()
    asyncio.run(publish(settings, [change]))
    seen, since = -1, time.monotonic()
    while True:
        distinct = sink.stats()["distinct"]
        if distinct >= expected:
            break
        if distinct != seen:
            seen, since = distinct, time.monotonic()
        elif time.monotonic() - since > 120:
            break
        time.sleep(0.5)
    time.sleep(2)  # a late duplicate would show now
    stats = sink.stats()
    first = stats["first"] - began if stats["first"] else float("nan")
    last = stats["last"] - began if stats["last"] else float("nan")
    say(
        f"{label}: {stats['distinct']:,} of {expected:,} mails, {stats['accepted']:,} accepted; "
        f"first after {first:.1f} s, last after {last:.1f} s "
        f"({stats['distinct'] / max(last - first, 1e-9):,.0f} mails/s between them)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--no-restarts", action="store_true")
    parser.add_argument("--mails", action="store_true", help="time a discontinuation and a policy")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="preaviso-million-"))
    data = out / "directory.jsonl"
    started = time.perf_counter()
    with data.open("wb") as file:
        totals = synth.write(synth.SynthSpec(customers=args.customers), file)
    lines = totals.lines
    say(f"synth: {lines:,} lines in {time.perf_counter() - started:.0f} s")
    with LocalKafka() as kafka, SinkProcess(out / "sink") as catcher:
        settings = local_settings(
            kafka.bootstrap, catcher, "million.", args.partitions, out / "data"
        )
        names = [settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
        worker = WorkerProcess(settings, out / "worker.log").start()
        assert worker.proc is not None
        sampler = Sampler(worker.proc.pid)
        sampler.start()
        started = time.perf_counter()
        env = {**os.environ, **settings_env(settings)}
        subprocess.run(
            [sys.executable, "-m", "preaviso", "publish", str(data)],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        say(f"published in {time.perf_counter() - started:.0f} s")
        asyncio.run(wait_idle(settings, names, within=6 * 3600))
        took = time.perf_counter() - started
        rss = proc_status_mb(worker.proc.pid, "VmRSS")
        peak = proc_status_mb(worker.proc.pid, "VmHWM")
        say(
            f"load: {lines:,} records in {took:.0f} s ({lines / took:,.0f} records/s); "
            f"worker RSS {rss:.0f} MB after, peak {max(peak, sampler.top):.0f} MB"
        )
        if args.mails:
            sink = catcher.control()
            top = max(totals.owners, key=lambda sku: totals.owners[sku])
            gone = dataset.dishwasher_discontinued("million-disc").model_copy(
                update={"skus": [top]}
            )
            time_mails(settings, sink, gone, totals.owners[top], f"discontinued {top}")
            chosen = regions_near(totals.regions, 200_000)
            scope = PolicyScope(regions=chosen)
            policy = dataset.warranty_change("million-policy").model_copy(update={"scope": scope})
            reach = sum(totals.regions[r] for r in chosen)
            time_mails(settings, sink, policy, reach, f"policy for {', '.join(chosen)}")
            sink.close()
        sampler.stop.set()
        worker.stop()
        if not args.no_restarts:
            kept = ready_after_start(settings, out / "worker-kept.log", names, "kept")
            say(f"restart, data dir kept: serving a new record after {kept:.1f} s")
            shutil.rmtree(settings.data_dir)
            empty = ready_after_start(settings, out / "worker-empty.log", names, "empty")
            say(f"restart, empty data dir: serving a new record after {empty:.1f} s")
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
