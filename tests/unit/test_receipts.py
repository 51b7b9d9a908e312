"""Receipts, then ``delivered`` entries, for every mail answered while the last were written."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from faust.types import TP

from preaviso.agents.produce import partition_for
from preaviso.agents.receipts import Recorder, RecorderClosed
from preaviso.streams import keys, scan
from tests.unit.producers import GatedProducer
from tests.unit.stores import Tables

RECEIPTS = "x.receipts"


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@dataclass
class Rig:
    """A ``delivered`` table, a producer that holds receipts until opened, their recorder."""

    table: Any
    producer: GatedProducer
    recorder: Recorder
    rocksdb: bool

    @property
    def changelog(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def marked(self, partition: int, customer: bytes, notice_id: str) -> bool:
        key = keys.key(customer, notice_id.encode())
        return scan.read(self.table, partition, key) == keys.MARK

    def persisted(self, partition: int) -> int | None:
        """Where a restart with the data dir kept reads the changelog from (RocksDB only)."""
        offset: int | None = self.table.data.persisted_offset(TP(self.changelog, partition))
        return offset


@pytest.fixture
def rig(tables: Tables) -> Rig:
    table = tables.table("delivered")
    producer = GatedProducer(gated=RECEIPTS)
    recorder = Recorder(lambda: producer, RECEIPTS, table, partitions=2)
    return Rig(table, producer, recorder, tables.rocksdb)


async def test_a_ledger_entry_follows_its_receipt_into_kafka_and_then_the_store(rig: Rig) -> None:
    recording = asyncio.ensure_future(rig.recorder.record(1, b"C1", "n1", b"receipt-1"))
    await settle()
    assert rig.producer.written == []  # no entry says "done" while its proof is not written
    assert not rig.marked(1, b"C1", "n1")

    rig.producer.opened.set()
    await recording

    assert [(topic, partition) for topic, partition, _ in rig.producer.written] == [
        (RECEIPTS, partition_for(b"C1", 2)),
        (rig.changelog, 1),  # the notice's partition, whatever the entry's key hashes to
    ]
    assert rig.marked(1, b"C1", "n1")
    if rig.rocksdb:
        assert rig.persisted(1) == 0


async def test_mails_answered_while_a_group_is_written_are_written_together_next(rig: Rig) -> None:
    first = asyncio.ensure_future(rig.recorder.record(0, b"C1", "n1", b"r1"))
    await settle()
    later = [
        asyncio.ensure_future(rig.recorder.record(0, f"C{n}".encode(), f"n{n}", f"r{n}".encode()))
        for n in (2, 3, 4)
    ]
    await settle()
    rig.producer.opened.set()
    await asyncio.gather(first, *later)

    written = [records for topic, _, records in rig.producer.written if topic == rig.changelog]
    assert [len(records) for records in written] == [1, 3]
    assert all(rig.marked(0, f"C{n}".encode(), f"n{n}") for n in (1, 2, 3, 4))
    if rig.rocksdb:
        assert rig.persisted(0) == 3


async def test_a_waiter_cancelled_by_a_stop_leaves_the_others_recorded(rig: Rig) -> None:
    cancelled = asyncio.ensure_future(rig.recorder.record(0, b"C1", "n1", b"r1"))
    kept = asyncio.ensure_future(rig.recorder.record(0, b"C2", "n2", b"r2"))
    await settle()
    cancelled.cancel()
    rig.producer.opened.set()
    await kept

    assert rig.marked(0, b"C1", "n1")  # sent, so recorded all the same
    assert rig.marked(0, b"C2", "n2")


async def test_a_graceful_stop_gives_the_answered_mails_time_to_be_recorded(rig: Rig) -> None:
    waiting = asyncio.ensure_future(rig.recorder.record(0, b"C1", "n1", b"r1"))
    await settle()

    await rig.recorder.drain(0.05)  # Kafka does not answer: the stop goes on without it
    assert not waiting.done()
    asyncio.get_running_loop().call_later(0.05, rig.producer.opened.set)
    await rig.recorder.drain(5.0)  # it does: the mail is recorded before the stop goes on
    rig.recorder.close()

    assert waiting.done()
    assert waiting.exception() is None
    assert rig.marked(0, b"C1", "n1")


async def test_a_stop_that_cannot_wait_fails_the_unrecorded_mails_for_deliver_to_give_back(
    rig: Rig,
) -> None:
    """Not a cancellation: deliver would take a cancelled mail for done, and commit it."""
    waiting = asyncio.ensure_future(rig.recorder.record(0, b"C1", "n1", b"r1"))
    await settle()

    rig.recorder.close()

    with pytest.raises(RecorderClosed):
        await waiting
    with pytest.raises(RecorderClosed):  # a mail answered after the stop began
        await rig.recorder.record(0, b"C2", "n2", b"r2")
    assert not rig.marked(0, b"C1", "n1")
