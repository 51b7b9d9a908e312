"""A batch of the bulk directory stages sees each table partition as the store under its
own writes, and stores them (with the changelog offset) only when asked to."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    UnknownTopicOrPartitionError,
)
from faust.types import TP

from preaviso.agents import bulk, produce
from preaviso.streams import faust_fixes, scan
from tests.unit.stage_fakes import faust_consumer, recovery_after
from tests.unit.stores import Tables


def test_a_batch_reads_the_store_under_its_own_writes(tables: Tables) -> None:
    table = tables.table("customers")
    tables.put(table, 1, b"C1", b"stored")
    tables.put(table, 1, b"C2", b"stored")
    writes = bulk.TableWrites(table, 1)

    writes[b"C1"] = b"new"
    del writes[b"C2"]
    writes[b"C3"] = b"added"

    assert writes.get(b"C1") == b"new"
    assert b"C2" not in writes
    assert writes.get(b"C3") == b"added"
    assert scan.read(table, 1, b"C1") == b"stored"  # nothing stored until the batch is written
    assert scan.read(table, 1, b"C3") is None


def test_stored_writes_replace_and_delete_entries(tables: Tables) -> None:
    table = tables.table("owners")
    tables.put(table, 0, b"old", b"1")

    scan.write(table, 0, {b"old": None, b"new": b"2"}, changelog_offset=41)

    assert scan.read(table, 0, b"old") is None
    assert scan.read(table, 0, b"new") == b"2"
    if tables.rocksdb:  # a restart with this data dir reads the changelog from there on
        changelog = TP(table.changelog_topic.get_topic_name(), 0)
        assert table.data.persisted_offset(changelog) == 41


class Loader:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.topics = frozenset({"x.customers"})

    def start(self, assigned: set[Any]) -> None:
        self.log.append(f"start {sorted(tp.partition for tp in assigned)}")

    def halt(self) -> None:
        self.log.append("halt")


async def test_faust_resumes_every_stream_partition_but_the_bulk_ones_and_starts_the_loader() -> (
    None
):
    log: list[str] = []
    assigned = {TP("x.customers", 0), TP("x.customers", 2), TP("x.impacts", 0)}
    resumed: set[Any] = set()

    recovery = recovery_after(assigned, resumed, log, preaviso_bulk=Loader(log))

    await faust_fixes._seek_then_resume(recovery)

    assert resumed == {TP("x.impacts", 0)}  # Faust never fetches the bulk topics
    assert log == ["resume_flow", "start [0, 2]"]


def test_a_revoke_halts_the_loader_before_faust_goes_on(monkeypatch: Any) -> None:
    from faust.tables.manager import TableManager

    log: list[str] = []
    monkeypatch.setitem(
        faust_fixes._ORIGINAL,
        (TableManager, "on_partitions_revoked"),
        lambda tables, revoked: log.append("faust revokes"),
    )
    tables = SimpleNamespace(app=SimpleNamespace(preaviso_bulk=Loader(log)))

    faust_fixes.halt_bulk_on_revoke(tables, set())

    assert log == ["halt", "faust revokes"]


def test_the_next_batch_sees_the_writes_of_one_not_stored_yet(tables: Tables) -> None:
    table = tables.table("customers")
    tables.put(table, 0, b"C1", b"stored")
    pipe = SimpleNamespace(tables={"customers": table})
    writing = bulk.Batch(pipe)  # type: ignore[arg-type]
    writing.table("customers", 0)[b"C1"] = b"newer"
    del writing.table("customers", 0)[b"C2"]

    following = bulk.Batch(pipe, writing)  # type: ignore[arg-type]
    view = following.table("customers", 0)

    assert view.get(b"C1") == b"newer"
    assert b"C2" not in view
    if tables.rocksdb:  # the memory store has no partitions
        assert following.table("customers", 1).get(b"C1") is None  # another partition


# Kafka's own murmur2 test vectors (clients UtilsTest), as the Java client places keys.
JAVA_MURMUR2 = {b"21": -973932308, b"foobar": -790332482, b"abc": 479470107}


@pytest.mark.parametrize(("key", "hashed"), JAVA_MURMUR2.items())
def test_records_without_a_partition_go_where_the_java_client_puts_them(
    key: bytes, hashed: int
) -> None:
    for partitions in (1, 3, 4, 12):
        assert produce.partition_for(key, partitions) == (hashed & 0x7FFFFFFF) % partitions


class FakeBuilder:
    def __init__(self, room: int) -> None:
        self.records: list[tuple[Any, Any]] = []
        self.room = room

    def append(self, *, key: Any, value: Any, timestamp: Any) -> object | None:
        if self.records and len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        pass


class FakeProducer:
    """Batches of two records; the first batch sent to ``failing`` fails once (transient)."""

    def __init__(self, failing: tuple[str, int]) -> None:
        self.failing: tuple[str, int] | None = failing
        self.log: dict[tuple[str, int], list[Any]] = {}
        self.loop = asyncio.get_running_loop()

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(room=2)

    async def send_batch(self, batch: FakeBuilder, topic: str, *, partition: int) -> Any:
        future = self.loop.create_future()
        written = self.log.setdefault((topic, partition), [])
        if self.failing == (topic, partition):
            self.failing = None
            future.set_exception(KafkaTimeoutError())
        else:
            future.set_result(SimpleNamespace(offset=len(written)))
            written.extend(batch.records)
        return future


async def test_a_failed_batch_goes_again_with_every_later_one_of_its_partition(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(produce, "backoff", lambda attempt: 0)
    producer = FakeProducer(failing=("t", 1))
    sends = [("t", b"k", b"v%d" % i, 1) for i in range(5)] + [("t", b"k", b"w", 0)]

    last = await produce.write_all(producer, sends, 2)

    # Partition 1: the first batch failed; the later ones (sent, then sent again) follow it,
    # so the newest value is the last one written, whatever was written twice.
    assert [v for _, v in producer.log["t", 1]][-5:] == [b"v0", b"v1", b"v2", b"v3", b"v4"]
    assert producer.log["t", 0] == [(b"k", b"w")]
    assert last == {("t", 0): 0, ("t", 1): len(producer.log["t", 1]) - 1}


async def test_a_batch_whose_future_was_cancelled_is_written_again(monkeypatch: Any) -> None:
    """A send cancelled under us (a producer closing a connection) is Kafka's trouble, not
    the batch's: written again, and never a ``CancelledError`` that would end the caller."""
    monkeypatch.setattr(produce, "backoff", lambda attempt: 0)
    producer = FakeProducer(failing=("none", 0))
    sending = producer.send_batch

    async def cancelled_once(batch: FakeBuilder, topic: str, *, partition: int) -> Any:
        producer.send_batch = sending  # type: ignore[method-assign]
        future = producer.loop.create_future()
        future.cancel()
        return future

    producer.send_batch = cancelled_once  # type: ignore[method-assign]

    last = await produce.write_all(producer, [("t", b"k", b"v", 0)], 2)

    assert producer.log["t", 0] == [(b"k", b"v")]
    assert last == {("t", 0): 0}


async def test_a_batch_the_producer_refuses_before_sending_it_is_written_again(
    monkeypatch: Any,
) -> None:
    """aiokafka raises some errors from ``send_batch`` itself, not through its future (no
    metadata for the topic yet, no room in its buffer): Kafka's trouble too, tried again."""
    monkeypatch.setattr(produce, "backoff", lambda attempt: 0)
    producer = FakeProducer(failing=("none", 0))
    sending = producer.send_batch
    refusals = [KafkaTimeoutError(), UnknownTopicOrPartitionError()]

    async def refused_twice(batch: FakeBuilder, topic: str, *, partition: int) -> Any:
        if refusals:
            raise refusals.pop(0)
        return await sending(batch, topic, partition=partition)

    producer.send_batch = refused_twice  # type: ignore[method-assign]

    last = await produce.write_all(producer, [("t", b"k", b"v", 0)], 2)

    assert producer.log["t", 0] == [(b"k", b"v")]
    assert last == {("t", 0): 0}


async def test_batches_handed_over_before_a_refusal_are_not_sent_twice(monkeypatch: Any) -> None:
    monkeypatch.setattr(produce, "backoff", lambda attempt: 0)
    producer = FakeProducer(failing=("none", 0))
    sending = producer.send_batch
    refusals = [KafkaTimeoutError()]

    async def refused_at_partition_1(batch: FakeBuilder, topic: str, *, partition: int) -> Any:
        if partition == 1 and refusals:
            raise refusals.pop(0)
        return await sending(batch, topic, partition=partition)

    producer.send_batch = refused_at_partition_1  # type: ignore[method-assign]

    await produce.write_all(producer, [("t", b"a", b"p0", 0), ("t", b"b", b"p1", 1)], 2)

    assert producer.log == {("t", 0): [(b"a", b"p0")], ("t", 1): [(b"b", b"p1")]}


async def test_a_refusal_for_good_from_send_batch_is_raised(monkeypatch: Any) -> None:
    producer = FakeProducer(failing=("none", 0))

    async def too_large(batch: FakeBuilder, topic: str, *, partition: int) -> Any:
        raise MessageSizeTooLargeError()

    producer.send_batch = too_large  # type: ignore[method-assign]

    with pytest.raises(MessageSizeTooLargeError):
        await produce.write_all(producer, [("t", b"k", b"v", 0)], 2)


async def test_a_fan_out_is_written_a_chunk_at_a_time(monkeypatch: Any) -> None:
    monkeypatch.setattr(produce, "CHUNK", 3)
    producer = FakeProducer(failing=("none", 0))
    built: list[int] = []

    def impacts() -> Any:
        for n in range(7):
            built.append(n)
            # never more than one chunk is built ahead of what Kafka holds
            assert len(built) - sum(len(v) for v in producer.log.values()) <= 3
            yield ("t", b"C%d" % n, b"impact", None)

    written = await produce.write_chunked(producer, impacts(), 4)

    assert written == 7
    assert sorted(k for v in producer.log.values() for k, _ in v) == [b"C%d" % n for n in range(7)]


async def test_a_batch_that_only_read_a_table_partition_is_written_and_committed(
    tables: Tables,
) -> None:
    """Re-publishing a customer already indexed reads ``customers-by-region`` and writes
    nothing there: that partition has no changelog record, and the batch still ends."""
    by_region, customers = tables.table("customers-by-region"), tables.table("customers")
    producer = FakeProducer(failing=("none", 0))
    commits: list[dict[Any, int]] = []

    async def commit(offsets: dict[Any, int]) -> bool:
        commits.append(offsets)
        return True

    pipe = SimpleNamespace(
        tables={"customers-by-region": by_region, "customers": customers},
        settings=SimpleNamespace(partitions=4),
        app=SimpleNamespace(
            producer=SimpleNamespace(_ensure_producer=lambda: producer),
            consumer=faust_consumer(lambda: {TP("x.customers-by-id", 0)}, commit),
        ),
    )
    loader = bulk.BulkLoader(pipe, {})  # type: ignore[arg-type]
    batch = bulk.Batch(pipe)  # type: ignore[arg-type]
    assert b"ES-MD\x1fC1" not in batch.table("customers-by-region", 0)  # read only
    batch.table("customers", 0)[b"C1"] = b"entry"
    fetched = {TopicPartition("x.customers-by-id", 0): [SimpleNamespace(offset=41)]}

    assert await loader._finish(batch, fetched)  # type: ignore[arg-type]

    assert scan.read(customers, 0, b"C1") == b"entry"
    assert commits == [{TP("x.customers-by-id", 0): 42}]
