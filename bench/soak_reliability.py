"""Soak test: many cycles of worker crashes, stops, restarts and joins, counted per cycle.

The long variant of ``test_cycles_of_crashes_stops_freezes_restarts_and_joins_...`` in
``tests/integration/test_reliability.py``, with the same harness
(``preaviso.devtools.chaos``) and the same oracle (``tests/oracle.py``):

    .venv/bin/python bench/soak_reliability.py --cycles 50
    .venv/bin/python bench/soak_reliability.py --cycles 20 --seed 1234 --keep-going

It starts its own Kafka broker (or uses ``PREAVISO_TEST_KAFKA_BOOTSTRAP``), a mail
catcher and two workers, publishes a directory once, then per cycle a policy change
for everyone while one worker is killed (kill -9), stopped (SIGTERM) or frozen at a random
point and restarted with its kept or an empty data dir (a frozen one resumes by
itself). It prints one line per cycle
(delivered, missing, duplicates, time from restart to the first new mail) and a
summary, and exits 1 if any cycle lost a notice, sent too many duplicates, or left a
partition stalled. The seed is printed; the same seed replays the same plan.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import local_settings
from preaviso.devtools import dataset
from preaviso.devtools.catcher import CatcherProcess
from preaviso.devtools.chaos import CycleReport, run_chaos, with_session_timeout
from preaviso.devtools.kafka import LocalKafka
from preaviso.devtools.rig import Rig
from preaviso.schemas.events import UpstreamEvent
from tests import oracle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--customers", type=int, default=250, help="directory size")
    parser.add_argument("--seed", type=int, default=None, help="replay a run's fault plan")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per cycle")
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=None,
        help="Kafka session timeout of the workers (default: the worker's own)",
    )
    parser.add_argument("--out", type=Path, default=None, help="mails, data dirs and logs")
    parser.add_argument(
        "--keep-going", action="store_true", help="do not stop at the first failed cycle"
    )
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # retries while a leader moves
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    out = args.out or Path(tempfile.mkdtemp(prefix="preaviso-soak-"))
    print(f"seed {seed} (replay: --seed {seed}); output in {out}", flush=True)

    broker: LocalKafka | None = None
    bootstrap = os.environ.get("PREAVISO_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = LocalKafka().start()
        bootstrap = broker.bootstrap
    try:
        with CatcherProcess(out / "mail") as catcher:
            prefix = f"soak-{uuid.uuid4().hex[:8]}."
            settings = local_settings(
                bootstrap, catcher, prefix, args.partitions, out / "data", connect_timeout=5
            )
            if args.session_timeout:
                settings = with_session_timeout(
                    settings, args.session_timeout, args.session_timeout / 3
                )
            rig = Rig(settings, out, catcher.out_dir)
            try:
                return soak(rig, args.customers, args.cycles, seed, args.timeout, args.keep_going)
            finally:
                rig.close()
    finally:
        if broker is not None:
            broker.stop()


def soak(rig: Rig, customers: int, cycles: int, seed: int, timeout: float, keep: bool) -> int:
    people, owned = dataset.directory(customers, seed=seed)
    as_dicts = [c.model_dump(mode="json") for c in people]
    owned_dicts = [o.model_dump(mode="json") for o in owned]
    domain = rig.settings.message_id_domain

    def expect(change: UpstreamEvent) -> Mapping[str, str]:
        return oracle.expected_mails(as_dicts, owned_dicts, change.model_dump(mode="json"), domain)

    began = time.monotonic()
    rig.start("a")
    rig.start("b")
    rig.load_directory([*people, *owned])

    def show(report: CycleReport) -> None:
        print(report.summary(), flush=True)
        for problem in report.problems():
            print(f"  - {problem}", flush=True)
        if report.missing:
            print(f"  missing customer ids: {', '.join(report.missing[:30])}", flush=True)

    reports = run_chaos(
        rig, expect, cycles=cycles, seed=seed, on_report=show, stop_on_problem=not keep,
        timeout=timeout,
    )  # fmt: skip
    failed = [r for r in reports if r.problems()]
    resumes = [
        f.first_mail_s for r in reports for f in r.fired if f.step.op == "start" and f.first_mail_s
    ]
    extra, bound = rig.duplicates_in_all()
    print(
        f"\n{len(reports)} cycle(s) in {time.monotonic() - began:.0f}s, seed {seed}: "
        f"{len(failed)} failed; notices {sum(r.expected for r in reports)}, "
        f"missing {sum(len(r.missing) for r in reports)}, duplicate mails {extra} "
        f"(bound {bound}), duplicate receipts {sum(r.receipt_duplicates for r in reports)}; "
        f"restart->first new mail median "
        f"{statistics.median(resumes) if resumes else float('nan'):.1f}s, "
        f"max {max(resumes, default=float('nan')):.1f}s"
    )
    if failed:
        print(f"first failure: {failed[0].name}\n{rig.log_tails()}")
    return 1 if failed or extra > bound else 0


if __name__ == "__main__":
    sys.exit(main())
