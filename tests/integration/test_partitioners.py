"""Any publisher, any partitioner: the worker places the directory itself."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from preaviso.devtools import dataset
from preaviso.devtools.dataset import policy_for_everyone
from preaviso.devtools.observe import MailBox
from preaviso.streams import topics as t
from preaviso.streams.kafka import client_options
from preaviso.streams.lag import wait_idle
from preaviso.streams.topics import ensure_topics
from tests import oracle
from tests.integration.conftest import Stack
from tests.integration.helpers import cli, jsonl, read_topic, wait_for

pytestmark = pytest.mark.integration

CUSTOMERS, OWNED = dataset.directory(40, seed=31)


def crc32_partitioner(key: bytes, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """librdkafka's default for keyed records (kcat, confluent-kafka): CRC32, not murmur2."""
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


def publish_with_crc32(stack: Stack, records: Sequence[tuple[str, str, bytes]]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(
            **client_options(stack.settings), partitioner=crc32_partitioner, acks="all"
        )
        await producer.start()
        try:
            for topic, key, value in records:
                await producer.send(stack.settings.topic(topic), value, key=key.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


def as_dicts(events: Sequence[Any]) -> list[dict[str, Any]]:
    return [json.loads(e.model_dump_json()) for e in events]


def test_a_directory_published_with_crc32_reaches_exactly_the_affected_customers(
    stack: Stack,
) -> None:
    partitions = list(range(stack.settings.partitions))
    murmur2 = DefaultPartitioner()
    moved = [
        c.customer_id
        for c in CUSTOMERS
        if crc32_partitioner(c.customer_id.encode(), partitions, partitions)
        != murmur2(c.customer_id.encode(), partitions, partitions)
    ]
    assert len(moved) >= len(CUSTOMERS) // 3, "the data must put customers elsewhere than murmur2"
    asyncio.run(ensure_topics(stack.settings))  # as any upstream's deployment would
    stack.start_worker()
    publish_with_crc32(
        stack,
        [(t.CUSTOMERS.name, c.customer_id, c.model_dump_json().encode()) for c in CUSTOMERS]
        + [(t.OWNERSHIPS.name, o.customer_id, o.model_dump_json().encode()) for o in OWNED],
    )
    names = [stack.settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
    asyncio.run(wait_idle(stack.settings, names, within=90))
    policy = policy_for_everyone("crc32-policy")
    discontinued = dataset.dishwasher_discontinued("crc32-disc")
    assert cli(stack.settings, "publish", "-", stdin=jsonl([policy, discontinued])).returncode == 0

    expected: dict[str, str] = {}
    for change in (policy, discontinued):
        expected |= oracle.expected_mails(
            as_dicts(CUSTOMERS),
            as_dicts(OWNED),
            json.loads(change.model_dump_json()),
            stack.settings.message_id_domain,
        )
    box = MailBox(stack.mail_dir)

    def arrived() -> bool:
        box.scan()
        return len(box.counts()) >= len(expected)

    worker = stack.worker
    assert worker is not None
    wait_for(arrived, 90, f"{len(expected)} mails", on_fail=worker.log_tail)
    assert set(box.counts()) == set(expected)
    assert read_topic(stack.settings, t.DEAD_LETTERS.name, 1, timeout=3) == []
