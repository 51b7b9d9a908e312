"""Consumer lag of the worker's group: how far each topic's committed offsets trail its end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from preaviso.settings import Settings
from preaviso.streams.kafka import client_options, connect_admin


async def topic_lag(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """Messages not yet committed by the worker group, per topic (uncommitted = whole topic)."""
    names = list(topics)
    admin = await connect_admin(settings)
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    try:
        await consumer.start()
        await consumer.topics()  # loads metadata for every topic
        tps = [
            TopicPartition(name, p)
            for name in names
            for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(settings.topic(settings.app_id))
    finally:
        await consumer.stop()
        await admin.close()
    lag = dict.fromkeys(names, 0)
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag[tp.topic] += max(0, ends[tp] - done)
    return lag


async def wait_idle(settings: Settings, topics: Iterable[str], timeout: float = 120.0) -> None:
    """Wait until the worker has committed everything on ``topics``."""
    names = list(topics)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        lag = await topic_lag(settings, names)
        if not any(lag.values()):
            return
        if asyncio.get_running_loop().time() > deadline:
            behind = ", ".join(f"{k}={v}" for k, v in lag.items() if v)
            raise TimeoutError(f"worker still behind after {timeout:g}s: {behind}")
        await asyncio.sleep(0.5)


async def end_offsets_total(settings: Settings, topic: str) -> int:
    """Records ever written to ``topic`` (sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    try:
        await consumer.start()
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    return sum(ends.values())
