"""The raw baselines: what the same work costs with the bare libraries, no Preaviso.

Each runs in the harness's process against the same broker or the same SMTP sink as
the Preaviso figure it is compared with, in the same run, so both see the same
machine at the same moment. Mail baselines are timed at the sink (first to last mail
accepted), exactly like Preaviso's delivery.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Iterator, Sequence
from email.message import EmailMessage

import aiosmtplib
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import wire
from preaviso.schemas.events import CustomerUpserted
from preaviso.settings import Settings
from preaviso.streams.kafka import client_options, partition_ids

Mail = tuple[str, str, bytes]  # envelope sender, recipient, the message bytes
RAW_OUT, FANOUT_OUT = "bench-raw-out", "bench-raw-fanout"
SCRATCH_TOPICS = (RAW_OUT, FANOUT_OUT)


async def consume_produce_commit(
    settings: Settings, topics: Sequence[str], total: int, *, group: str, within: float
) -> float:
    """Records/s of the plainest stream stage: read a batch, write it on, flush, commit.

    Reads ``total`` records of ``topics`` from the start in its own consumer group and
    writes each to a scratch topic (same key, same bytes), flushing and committing once
    per batch. Timed from the first fetch to the last commit.
    """
    out = await wire.scratch_topic(settings, RAW_OUT)
    found = await partition_ids(settings, list(topics))
    tps = [TopicPartition(topic, p) for topic in topics for p in found[topic]]
    # Assigned, not subscribed: a group join (and its rebalance delay) is not the loop's cost.
    consumer = AIOKafkaConsumer(
        **client_options(settings), group_id=group, enable_auto_commit=False
    )
    sender = wire.producer(settings)
    await consumer.start()
    await sender.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        done, began = 0, time.perf_counter()
        deadline = time.monotonic() + within
        while done < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw loop read {done} of {total} records in {within:g}s")
            batch = await consumer.getmany(timeout_ms=500)
            records = [(out, m.key, m.value) for msgs in batch.values() for m in msgs]
            if records:
                await wire.send_all(sender, records)
                await consumer.commit()
                done += len(records)
        return done / (time.perf_counter() - began)
    finally:
        await sender.stop()
        await consumer.stop()


async def produce_rate(settings: Settings, records: Sequence[tuple[bytes, bytes]]) -> float:
    """Records/s of a bare producer writing ``(key, value)`` pairs to a scratch topic."""
    out = await wire.scratch_topic(settings, FANOUT_OUT)
    sender = wire.producer(settings)
    await sender.start()
    try:
        began = time.perf_counter()
        await wire.send_all(sender, [(out, key, value) for key, value in records])
        return len(records) / (time.perf_counter() - began)
    finally:
        await sender.stop()


async def smtp_send(host: str, port: int, mails: Sequence[Mail], connections: int) -> None:
    """Send prebuilt mails over ``connections`` aiosmtplib connections, each taking the next."""
    queue: Iterator[Mail] = iter(mails)

    async def one() -> None:
        client = aiosmtplib.SMTP(hostname=host, port=port)
        await client.connect()
        for sender, recipient, message in queue:
            await client.sendmail(sender, [recipient], message)
        await client.quit()

    await asyncio.gather(*(one() for _ in range(connections)))


NaiveMail = tuple[str, str, str, str, str]  # name, address, subject, text, HTML


def naive(host: str, port: int, mails: Sequence[NaiveMail], sender: str) -> None:
    """What a first script would do: for each customer, an EmailMessage of the notice's
    subject, text and HTML, sent over a new connection."""
    for i, (name, address, subject, text, html) in enumerate(mails):
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = f"{name} <{address}>"
        msg["Subject"] = subject
        msg["Message-ID"] = f"<naive-{i}@bench.example.com>"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        with smtplib.SMTP(host, port) as smtp:
            smtp.send_message(msg)


def placeholder_mails(customers: Sequence[CustomerUpserted]) -> list[NaiveMail]:
    """The naive script's mails before stop 24: a two-line body, a sixth of a notice's
    size. Still measured, so the page shows what the change of baseline did."""
    return [
        (
            c.name,
            str(c.email),
            "Nuevo horario de atención",
            f"Hola {c.name}:\n\nDe lunes a sábado, de 8 a 20 h, desde el 1 de mayo.\n",
            f"<p>Hola {c.name}:</p><p>De lunes a sábado, de 8 a 20 h.</p>",
        )
        for c in customers
    ]
