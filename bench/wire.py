"""Kafka as the benchmark uses it: fast publishing of prebuilt records, and scratch topics.

The harness publishes prebuilt bytes (the ones ``preaviso publish`` would send, with
the same keys) so that the publisher's own validation is not part of what is timed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from bench.directory import Record
from preaviso.settings import Settings
from preaviso.streams.kafka import client_options, connect_admin, describe_partitions


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer that writes like the worker does: acknowledged by all in-sync replicas."""
    return AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=5, max_batch_size=262144, **options
    )


async def send_all(sender: AIOKafkaProducer, records: Sequence[Record]) -> None:
    """Send in order and wait until every record is acknowledged."""
    futures = [await sender.send(topic, value, key=key) for topic, key, value in records]
    for future in futures:
        await future


async def publish(settings: Settings, records: Sequence[Record]) -> float:
    """Publish ``records`` (idempotent, ``acks=all``); seconds from first send to last ack."""
    sender = producer(settings, enable_idempotence=True)
    await sender.start()
    try:
        began = time.perf_counter()
        await send_all(sender, records)
        return time.perf_counter() - began
    finally:
        await sender.stop()


async def scratch_topic(settings: Settings, name: str) -> str:
    """A topic for a baseline's output, shaped like the worker's (same partitions)."""
    topic = settings.topic(name)
    admin = await connect_admin(settings)
    try:
        if topic not in await describe_partitions(admin, [topic]):
            await admin.create_topics(
                [NewTopic(topic, settings.partitions, settings.replication_factor)]
            )
    finally:
        await admin.close()
    return topic
