"""Reproduce open bug 1 of issue 3: after tables recover from changelogs only, stages stall.

Run: .venv/bin/python scripts/repro_recovery_stall.py
Expected today: impacts 33, but fewer notices and receipts (should be 27 and 27).
"""

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preaviso.devtools import dataset
from preaviso.devtools.catcher import CatcherProcess
from preaviso.devtools.kafka import LocalKafka
from preaviso.devtools.worker import WorkerProcess
from preaviso.publish import publish
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.lag import end_offsets_total, wait_idle


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="preaviso-stall-"))
    kafka = LocalKafka().start()
    try:
        with CatcherProcess(out / "mail") as catcher:
            s = Settings(
                kafka_bootstrap=kafka.bootstrap,
                smtp_host=catcher.host,
                smtp_port=catcher.port,
                data_dir=out / "data",
                topic_prefix="r.",
                partitions=3,
            )
            people, owned = dataset.directory(60, seed=11)
            worker = WorkerProcess(s, out / "w1.log").start()
            asyncio.run(publish(s, [*people, *owned]))
            loaded = (t.CUSTOMERS, t.OWNERSHIPS, t.OWNERSHIPS_BY_SKU)
            asyncio.run(wait_idle(s, [s.topic(x.name) for x in loaded]))
            worker.stop()
            fresh = s.model_copy(update={"data_dir": out / "data2"})  # changelogs only
            worker = WorkerProcess(fresh, out / "w2.log").start()
            asyncio.run(publish(fresh, [dataset.dishwasher_discontinued("x1")]))
            time.sleep(20)
            for spec in (t.IMPACTS, t.NOTICES, t.RECEIPTS, t.DEAD_LETTERS):
                print(spec.name, asyncio.run(end_offsets_total(s, s.topic(spec.name))))
            worker.stop()
    finally:
        kafka.stop()


if __name__ == "__main__":
    main()
