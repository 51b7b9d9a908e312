"""A never-committed partition sought to offset 0 starts at its log start, even a later one.

``faust_fixes.seek_to_committed`` rewinds such partitions with ``seek(tp, 0)`` instead
of a ListOffsets round trip; this is the broker behaviour it relies on.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import RecordsToDelete

from preaviso.settings import Settings
from preaviso.streams.kafka import connect_admin
from preaviso.streams.topics import NOTICES, ensure_topics
from tests.integration.helpers import write_numbered


async def test_offset_0_below_the_log_start_reads_from_the_log_start(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=1)
    await ensure_topics(settings)
    tp = TopicPartition(settings.topic(NOTICES.name), 0)
    await write_numbered(kafka_bootstrap, tp, 5)
    admin = await connect_admin(settings)
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=3)})  # log start: 3
    finally:
        await admin.close()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic_prefix}never-committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # as the worker's app
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        assert await consumer.committed(tp) is None
        consumer.seek(tp, 0)
        read: list[tuple[int, bytes | None]] = []
        for _ in range(10):  # up to ~10 s: the out-of-range answer, the reset, the fetch
            batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), 10)
            read += [(r.offset, r.value) for r in batch.get(tp, [])]
            if len(read) >= 2:
                break
        assert read == [(3, b"r3"), (4, b"r4")]
    finally:
        await consumer.stop()
