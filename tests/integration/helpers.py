"""What the integration tests share: run the CLI, read topics, wait for mail."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from preaviso.devtools.worker import settings_env
from preaviso.settings import Settings
from preaviso.streams.kafka import client_options, partition_ids


def cli(
    settings: Settings, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `preaviso ARGS` as a user would, with the settings as environment variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREAVISO_")}
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "preaviso", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def jsonl(events: Iterable[BaseModel]) -> str:
    return "".join(e.model_dump_json() + "\n" for e in events)


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    on_fail: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{on_fail()}")
        time.sleep(0.25)


def read_topic(settings: Settings, name: str, expect: int, timeout: float = 30) -> list[Any]:
    """Every record of a topic (at least ``expect``), from the beginning, without a group."""

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(
            **client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        topic = settings.topic(name)
        found = await partition_ids(settings, [topic])
        if topic not in found:
            return []  # never created: nothing was ever published to it
        tps = [TopicPartition(topic, p) for p in found[topic]]
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while len(records) < expect and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    records.extend(msgs)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())


def records_as_json(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


async def write_numbered(bootstrap: str, tp: TopicPartition, count: int) -> None:
    """Write ``r0``, ``r1``, ... (``count`` records) to one partition, each acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(tp.topic, f"r{n}".encode(), partition=tp.partition)
    finally:
        await producer.stop()
