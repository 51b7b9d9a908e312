"""Directory stages that take records in bulk, inside Faust's partition assignment.

Faust hands an agent one record at a time, at ~20 µs each before any work, and a
directory record passes two stages: at a million customers and three million
purchases that fixed cost is most of a load. So the directory topics are read
here instead, by a plain aiokafka consumer, a fetch at a time: each record is
handled as before (the same pure functions), the outputs of a fetch are sent
together, table entries are stored only once their changelog records are in
Kafka, and then the fetch's offsets are committed.

Faust still owns the partitions. The app subscribes the topics, so they are
assigned in the worker's group like every other (co-partitioned with the tables,
and ``preaviso lag`` and Kafka's tools see one group), but Faust never fetches
them. A loader starts on the partitions Faust assigned once Faust's table
recovery is over, and is halted before Faust's revoke goes on
(``streams/faust_fixes.py``). Offsets are committed through Faust's consumer: a
commit from a loader whose partitions have moved fails (stale generation) and
stops it. At-least-once: a crash before the commit replays the fetch, and every
write here is idempotent (the newest upsert wins; the same owner entry again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from preaviso.agents.outbox import backoff, failure_name
from preaviso.agents.produce import Send, write_all
from preaviso.agents.stage import dead_letter_record
from preaviso.streams import scan
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.kafka import client_options

log = logging.getLogger("preaviso.bulk")

FETCH_WAIT = 0.1
"""Seconds a fetch waits for records (the broker, then ``getmany``) before it asks again."""


@dataclass(frozen=True, slots=True)
class Source:
    """The record being handled, as ``dead_letter_for`` reads it (``event.message``)."""

    message: Any


class TableWrites:
    """One table partition as a batch sees it: the store, under the batch's own writes.

    It offers what the directory functions use of a table (``get``, ``in``,
    assignment, ``del``), so they run unchanged over a batch.
    """

    def __init__(self, table: Any, partition: int, below: TableWrites | None = None) -> None:
        self.table, self.partition = table, partition
        self.entries: dict[bytes, bytes | None] = {}
        self.below = below
        """The previous batch's writes, while they are not stored yet."""

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        if key in self.entries:
            value = self.entries[key]
        elif self.below is not None and key in self.below.entries:
            value = self.below.entries[key]
        else:
            value = scan.read(self.table, self.partition, key)
        return default if value is None else value

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.entries[key] = value

    def __delitem__(self, key: bytes) -> None:
        self.entries[key] = None


@dataclass(slots=True)
class Batch:
    """What the records of one fetch produce: records to send, table writes, dead letters."""

    pipe: Pipeline
    below: Batch | None = None
    """The previous batch, if its writes are still on their way."""
    sends: list[Send] = field(default_factory=list)
    tables: dict[tuple[str, int], TableWrites] = field(default_factory=dict)

    def send(self, spec: t.TopicSpec, key: bytes, value: bytes) -> None:
        """A record for ``spec``, placed by its key (the worker's murmur2)."""
        self.sends.append((self.pipe.topic_name(spec), key, value, None))

    def table(self, name: str, partition: int) -> TableWrites:
        found = self.tables.get((name, partition))
        if found is None:
            below = self.below.tables.get((name, partition)) if self.below is not None else None
            table = self.pipe.tables[name]
            found = self.tables[name, partition] = TableWrites(table, partition, below)
        return found

    def dead_letter(self, stage: str, record: Any, exc: BaseException) -> None:
        key, letter = dead_letter_record(Source(record), stage, exc)
        self.sends.append((self.pipe.topic_name(t.DEAD_LETTERS), key, letter, None))


Handler = Callable[[Any, "Batch"], None]
"""Handles one record into the batch. It decodes and checks before it writes, so an
exception (the record is at fault: a dead letter) leaves nothing of it behind."""


class BulkLoader:
    """Reads the bulk stages' topics on the partitions Faust assigned to this worker."""

    def __init__(self, pipe: Pipeline, stages: Mapping[t.TopicSpec, tuple[str, Handler]]) -> None:
        self._pipe = pipe
        self._stages = {pipe.topic_name(spec): stage for spec, stage in stages.items()}
        self.topics = frozenset(self._stages)
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[bool] | None = None

    def start(self, assigned: set[Any]) -> None:
        """Load ``assigned`` (Faust's partitions of our topics): Faust's recovery is over."""
        self.halt()
        tps = sorted(TopicPartition(tp.topic, tp.partition) for tp in assigned)
        if tps:
            self._task = asyncio.ensure_future(self._run(tps))

    def halt(self) -> None:
        """Stop at once (a revoke, a stop): nothing more is stored or committed."""
        for task in (self._task, self._writing):
            if task is not None:
                task.cancel()
        self._task = self._writing = None

    async def _run(self, tps: list[TopicPartition]) -> None:
        attempt = 0
        while True:
            consumer = AIOKafkaConsumer(
                **client_options(self._pipe.settings),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                # Its own writes come back to it (re-keyed records): ask again soon.
                fetch_max_wait_ms=int(FETCH_WAIT * 1000),
            )
            try:
                await consumer.start()
                consumer.assign(tps)
                await self._seek_committed(consumer, tps)
                attempt = 0
                if not await self._load(consumer):
                    log.info("bulk: partitions moved on (a rebalance); loader stops")
                    return
            except Exception as exc:  # Kafka or the network: start again from the commits
                attempt += 1
                log.warning(
                    "bulk: loading %s failed (%s); again from the committed offsets in %.1fs",
                    ", ".join(sorted(self.topics)),
                    failure_name(exc),
                    backoff(attempt),
                )
                await asyncio.sleep(backoff(attempt))
            finally:
                if self._writing is not None:
                    self._writing.cancel()
                    self._writing = None
                await consumer.stop()

    async def _seek_committed(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        committed = await self._pipe.app.consumer._thread.call_thread(
            _committed, self._pipe.app.consumer._thread, tps
        )
        for tp in tps:
            offset = committed.get(tp)
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)

    async def _load(self, consumer: AIOKafkaConsumer) -> bool:
        """Handle fetch after fetch; False once Faust's group has moved on.

        One batch is written while the next is handled: its table writes are seen
        by the next (``TableWrites.below``), and the next is sent only once it is
        written, so outputs never overtake each other on a partition.
        """
        below: Batch | None = None
        while True:
            fetched = await consumer.getmany(
                timeout_ms=int(FETCH_WAIT * 1000), max_records=self._pipe.settings.directory_batch
            )
            batch = self._handle(fetched, below) if fetched else None
            if self._writing is not None:
                if not await self._writing:
                    return False
                self._writing = None
            if batch is not None:
                self._writing = asyncio.ensure_future(self._finish(batch, fetched))
            below = batch

    def _handle(self, fetched: Mapping[TopicPartition, list[Any]], below: Batch | None) -> Batch:
        batch = Batch(self._pipe, below)
        for tp, records in fetched.items():
            stage, handle = self._stages[tp.topic]
            for record in records:
                try:
                    handle(record, batch)
                except Exception as exc:  # the record is at fault
                    batch.dead_letter(stage, record, exc)
        return batch

    async def _finish(self, batch: Batch, fetched: Mapping[TopicPartition, list[Any]]) -> bool:
        """Write a batch's outputs, then store its table entries, then commit its offsets."""
        written = [  # some partitions were only read
            (w, w.table.changelog_topic.get_topic_name())
            for w in batch.tables.values()
            if w.entries
        ]
        for writes, topic in written:
            batch.sends.extend((topic, k, v, writes.partition) for k, v in writes.entries.items())
        producer = self._pipe.app.producer._ensure_producer()
        offsets = await write_all(producer, batch.sends, self._pipe.settings.partitions)
        for writes, topic in written:
            scan.write(
                writes.table, writes.partition, writes.entries, offsets[topic, writes.partition]
            )
        for writes in batch.tables.values():
            writes.below = None  # stored: the batch below is in the store too
        batch.below = None
        done = {TP(tp.topic, tp.partition): recs[-1].offset + 1 for tp, recs in fetched.items()}
        committed: bool = await self._pipe.app.consumer._commit(done)
        return committed


async def _committed(thread: Any, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
    """The group's committed offsets, asked by Faust's own consumer (in its thread)."""
    consumer = thread._ensure_consumer()
    return {tp: await consumer.committed(tp) for tp in tps}
