"""Faust's floor: events per CPU-second through one agent that does nothing.

Every Preaviso stage is a Faust agent, so no stage can be cheaper than this. It
runs the same records through a bare ``stream.events()`` loop, then through the
project's ``StageLoop`` with a handler that does nothing, and prints both, so the
cost of Faust's per-event machinery and of the stage loop on top are known apart.

    PYTHONPATH=. .venv/bin/python bench/faust_floor.py --records 200000

It starts its own broker; each mode runs in a fresh process (a new Faust app).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("plain", "stageloop")


async def fill(bootstrap: str, topic: str, records: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 4, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    try:
        sends = [await producer.send(topic, b"x" * 200, key=b"%d" % n) for n in range(records)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def consume(bootstrap: str, topic: str, records: int, mode: str) -> None:
    """Run a Faust worker over ``topic`` until ``records`` were seen; print the rate, exit."""
    import faust

    from preaviso.agents.outbox import Outbox
    from preaviso.agents.stage import StageLoop, queued
    from preaviso.settings import Settings
    from preaviso.streams import faust_fixes
    from preaviso.streams.app import Pipeline

    faust_fixes.apply()
    app = faust.App(
        f"{topic}-{mode}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        datadir=tempfile.mkdtemp(prefix=f"{topic}-"),
    )
    seen = {"n": 0, "wall": 0.0, "cpu": 0.0}

    def count() -> None:
        if seen["n"] == 0:
            seen["wall"], seen["cpu"] = time.monotonic(), time.process_time()
        seen["n"] += 1
        if seen["n"] == records:
            wall = time.monotonic() - seen["wall"]
            cpu = time.process_time() - seen["cpu"]
            print(f"{mode}: {records / wall:,.0f} events/s, {records / cpu:,.0f} per CPU-second")
            sys.stdout.flush()
            os._exit(0)

    @app.agent(app.topic(topic, key_type=bytes, value_type=bytes))
    async def agent(stream: Any) -> None:
        if mode == "plain":
            async for _ in stream.events():
                count()
        else:

            async def handle(event: Any) -> None:
                count()

            outbox = Outbox(Pipeline(settings=Settings(), app=app), "floor")
            await StageLoop("floor", outbox, handle).run(stream.events(), lambda: queued(stream))

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--consume", nargs=3, metavar=("BOOTSTRAP", "TOPIC", "MODE"))
    args = parser.parse_args()
    if args.consume:
        consume(args.consume[0], args.consume[1], args.records, args.consume[2])
        return
    from preaviso.devtools.kafka import LocalKafka
    from preaviso.devtools.kafka_fetch import fetch_kafka

    with LocalKafka(libs=fetch_kafka()) as broker:
        for mode in MODES:
            topic = f"floor-{mode}-{os.getpid()}"
            asyncio.run(fill(broker.bootstrap, topic, args.records))
            out = subprocess.run(
                [sys.executable, __file__, "--records", str(args.records), "--consume",
                 broker.bootstrap, topic, mode],
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            # Faust sends a worker's stdout to its log (stderr): look in both.
            lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "events/s" in ln]
            print(lines[-1].split("] ")[-1] if lines else f"{mode}: failed\n{out.stderr[-2000:]}")


if __name__ == "__main__":
    main()
