"""A stream partition with room again is fetched at once, not after Faust's 1.5 s fetch.

aiokafka sends one fetch at a time to a broker and leaves paused partitions out of
it. While a stream partition is paused (its queue full), the fetch in flight holds
only quiet partitions, and the broker keeps it up to the consumer's
``fetch_max_wait_ms``; the partition, resumed meanwhile, waits for it to come back.
Here on the real broker, with the consumer as Faust builds it for the worker, with
``faust_fixes`` and without.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition

from preaviso.settings import Settings
from preaviso.streams import faust_fixes
from preaviso.streams.app import create_app
from preaviso.streams.topics import NOTICES, ensure_topics
from tests.integration.helpers import write_numbered


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=2)


async def resumed_after(settings: Settings, *, fixed: bool) -> float:
    """Seconds from resuming a partition, paused while a fetch of a quiet one was in
    flight, to its records: the worker's consumer, as ``create_app`` makes it, with
    ``faust_fixes`` or (``fixed=False``) as Faust makes it."""
    await ensure_topics(settings)
    busy = TopicPartition(settings.topic(NOTICES.name), 0)
    quiet = TopicPartition(settings.topic(NOTICES.name), 1)
    await write_numbered(settings.kafka_bootstrap, busy, 3)

    app = create_app(settings, register_agents=False).app  # applies faust_fixes
    assert faust_fixes.applied()
    if not fixed:
        faust_fixes.revert()
    thread = app.consumer._thread
    thread.thread_loop.close()  # the consumer thread's own loop: not needed here
    try:
        consumer = thread._create_worker_consumer(app.transport)
    finally:
        faust_fixes.apply()
    await consumer.start()
    try:
        consumer.assign([busy, quiet])
        consumer.pause(busy)
        consumer.seek(busy, 0)
        await consumer.seek_to_end(quiet)
        await consumer.getmany(quiet, timeout_ms=300)  # a fetch of the quiet one is out
        consumer.resume(busy)
        started = time.perf_counter()
        fetched = await asyncio.wait_for(consumer.getmany(busy, timeout_ms=5000), 10)
        waited = time.perf_counter() - started
        assert [r.value for r in fetched.get(busy, [])] == [b"r0", b"r1", b"r2"]
        return waited
    finally:
        await consumer.stop()


async def test_a_resumed_partition_is_fetched_within_the_fixed_wait(settings: Settings) -> None:
    waited = await resumed_after(settings, fixed=True)
    assert waited < 0.5  # the fixed wait is 0.1 s (a unit test checks the setting)


async def test_without_the_fix_it_waits_for_fausts_fetch(settings: Settings) -> None:
    waited = await resumed_after(settings, fixed=False)
    assert waited > 0.8  # up to 1.5 s: what is left of the fetch in flight
