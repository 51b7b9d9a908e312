"""A stage's flush does not wait out the producer's linger: the batch goes out at once."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer

from preaviso.settings import Settings
from preaviso.streams.kafka import send_now
from preaviso.streams.topics import NOTICES, ensure_topics

LINGER_MS = 3000


async def test_send_now_sends_a_lingering_batch_without_waiting(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=1)
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=LINGER_MS, acks="all")
    await producer.start()
    try:
        await (await producer.send(settings.topic(NOTICES.name), b"warm-up"))  # metadata known

        lingering = await producer.send(settings.topic(NOTICES.name), b"lingering")
        started = time.monotonic()
        await asyncio.sleep(0.2)
        assert not lingering.done()  # the producer does linger: the test can fail

        assert send_now(producer) is True
        await asyncio.wait_for(lingering, LINGER_MS / 1000 / 2)
        assert time.monotonic() - started < LINGER_MS / 1000 / 2
    finally:
        await producer.stop()


def test_send_now_on_a_producer_not_started_is_harmless() -> None:
    assert send_now(object()) is False
