"""Receipts, then ``delivered`` entries, for every mail answered while the last were written."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP

from preaviso.agents.produce import partition_for
from preaviso.agents.receipts import Recorder
from preaviso.streams import keys, scan
from tests.unit.producers import GatedProducer
from tests.unit.stores import Tables

RECEIPTS = "x.receipts"


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def marked(table: Any, partition: int, customer: bytes, notice_id: str) -> bool:
    return scan.read(table, partition, keys.key(customer, notice_id.encode())) == keys.MARK


async def test_a_ledger_entry_follows_its_receipt_into_kafka_and_then_the_store(
    tables: Tables,
) -> None:
    table = tables.table("delivered")
    changelog = table.changelog_topic.get_topic_name()
    producer = GatedProducer(gated=RECEIPTS)
    recorder = Recorder(producer, RECEIPTS, table, partitions=2)

    recording = asyncio.ensure_future(recorder.record(1, b"C1", "n1", b"receipt-1"))
    await settle()
    assert producer.written == []  # no entry says "done" while its proof is not written
    assert not marked(table, 1, b"C1", "n1")

    producer.opened.set()
    await recording

    assert [(topic, partition) for topic, partition, _ in producer.written] == [
        (RECEIPTS, partition_for(b"C1", 2)),
        (changelog, 1),  # the notice's partition, whatever the entry's key hashes to
    ]
    assert marked(table, 1, b"C1", "n1")
    if tables.rocksdb:  # a restart with the data dir kept reads the changelog from there on
        assert table.data.persisted_offset(TP(changelog, 1)) == 0


async def test_mails_answered_while_a_group_is_written_are_written_together_next(
    tables: Tables,
) -> None:
    table = tables.table("delivered")
    changelog = table.changelog_topic.get_topic_name()
    producer = GatedProducer(gated=RECEIPTS)
    recorder = Recorder(producer, RECEIPTS, table, partitions=2)

    first = asyncio.ensure_future(recorder.record(0, b"C1", "n1", b"r1"))
    await settle()
    later = [
        asyncio.ensure_future(recorder.record(0, f"C{n}".encode(), f"n{n}", f"r{n}".encode()))
        for n in (2, 3, 4)
    ]
    await settle()
    producer.opened.set()
    await asyncio.gather(first, *later)

    entry_writes = [records for topic, _, records in producer.written if topic == changelog]
    assert [len(records) for records in entry_writes] == [1, 3]
    assert all(marked(table, 0, f"C{n}".encode(), f"n{n}") for n in (1, 2, 3, 4))
    if tables.rocksdb:
        assert table.data.persisted_offset(TP(changelog, 0)) == 3


async def test_a_waiter_cancelled_by_a_stop_leaves_the_others_recorded(tables: Tables) -> None:
    table = tables.table("delivered")
    producer = GatedProducer(gated=RECEIPTS)
    recorder = Recorder(producer, RECEIPTS, table, partitions=2)

    cancelled = asyncio.ensure_future(recorder.record(0, b"C1", "n1", b"r1"))
    kept = asyncio.ensure_future(recorder.record(0, b"C2", "n2", b"r2"))
    await settle()
    cancelled.cancel()
    producer.opened.set()
    await kept

    assert marked(table, 0, b"C1", "n1")  # sent, so recorded all the same
    assert marked(table, 0, b"C2", "n2")
