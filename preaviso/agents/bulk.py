"""Stages that take records in bulk, inside Faust's partition assignment.

Faust hands an agent one record at a time, at ~20 µs each before any work. The
directory stages (a record passes two of them, a million customers and three
million purchases) and notify (one impact per notice) pay that fixed cost on
every record, so their topics are read here instead, by a plain aiokafka
consumer, a fetch at a time, in batches (a fetch, or the part of it handled within
``BATCH_TIME``): each record is handled as before (the same pure functions), the
outputs of a batch are sent together, its table entries then go to their
changelogs and only then to the store, and then the batch's offsets are
committed. A table entry never reaches Kafka before the outputs of its batch: an
``issued`` mark must not outlive a notice a crash kept from being written.

Faust still owns the partitions. The app subscribes the topics, so they are
assigned in the worker's group like every other (co-partitioned with the tables,
and Kafka's tools and ``streams/lag.py`` see one group), but Faust never fetches
them. A loader starts on the partitions Faust assigned once Faust's table
recovery is over, and is halted before Faust's revoke goes on
(``streams/faust_fixes.py``). Offsets are committed through Faust's consumer: a
commit from a loader whose partitions have moved fails (stale generation) and
stops it. At-least-once: a crash before the commit replays the batch, and every
write here is idempotent (the newest upsert wins; the same owner entry again; a
notice already in ``issued`` is skipped, and deliver sends a notice id once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from preaviso.agents.dead_letters import dead_letter_record
from preaviso.agents.outbox import backoff, failure_name
from preaviso.agents.produce import Send, write_all
from preaviso.compose import Composed, Job
from preaviso.streams import faust_fixes, group, scan
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline

if TYPE_CHECKING:  # composer.py imports SLICE from here
    from preaviso.agents.composer import Composer

log = logging.getLogger("preaviso.bulk")

SLICE = 0.005
"""Seconds of handling before the loader lets the event loop run other work (deliver's
sends): a fetch of 5,000 directory records takes ~0.1 s to handle."""
BATCH_TIME = 0.05
"""Seconds (wall clock, yields to other work included) after which a batch is written
and the rest of its fetch left for the next: a fan-out's first notices go out without
waiting for the whole fetch."""
COMPOSE_MAX = 250
"""Notices a batch composes at most (~25 ms of rendering): the batch's notices are
written once all are composed, so this bounds how long the first of them waits."""


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


AfterCompose = Callable[[Composed, "Batch"], None]


@dataclass(frozen=True, slots=True)
class Composing:
    """A notice a batch composes, and what to do with it."""

    stage: str
    record: Any
    job: Job
    then: AfterCompose


@dataclass(slots=True)
class Batch:
    """What the records of one batch (a fetch, or part of one) produce: records to send,
    table writes, dead letters."""

    pipe: Pipeline
    below: Batch | None = None
    """The previous batch, if its writes are still on their way."""
    sends: list[Send] = field(default_factory=list)
    tables: dict[tuple[str, int], TableWrites] = field(default_factory=dict)
    jobs: list[Composing] = field(default_factory=list)
    """Notices to compose (``compose``), before the batch is written."""

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

    def compose(self, stage: str, record: Any, job: Job, then: AfterCompose) -> None:
        """Compose ``job`` (perhaps in another process), then call ``then`` with the result,
        in the order of the records; an exception from ``then`` dead-letters ``record``."""
        self.jobs.append(Composing(stage, record, job, then))

    def dead_letter(self, stage: str, record: Any, exc: BaseException) -> None:
        key, letter = dead_letter_record(Source(record), stage, exc)
        self.sends.append((self.pipe.topic_name(t.DEAD_LETTERS), key, letter, None))


Fetched = dict[TopicPartition, list[Any]]
"""Records by partition, in offset order, as ``getmany`` returns them."""

Handler = Callable[[Any, "Batch"], None]
"""Handles one record into the batch. It decodes and checks before it writes, so an
exception (the record is at fault: a dead letter) leaves nothing of it behind."""


class BulkLoader:
    """Reads the bulk stages' topics on the partitions Faust assigned to this worker."""

    def __init__(
        self,
        pipe: Pipeline,
        stages: Mapping[t.TopicSpec, tuple[str, Handler]],
        composer: Composer | None = None,
    ) -> None:
        self._pipe = pipe
        self._composer = composer
        self._stages = {pipe.topic_name(spec): stage for spec, stage in stages.items()}
        self.topics = frozenset(self._stages)
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[bool] | None = None
        self._assignment_held = True
        """False from a halt (a revoke, a stop) until Faust's next assignment."""

    def assigned(self) -> None:
        """Faust has a new assignment: the loader may start on it once its recovery ends."""
        self._assignment_held = True

    def start(self, assigned: set[Any]) -> None:
        """Load ``assigned`` (Faust's partitions of our topics): Faust's recovery is over.

        A revoke halts the loader, and one can come after the assignment and before its
        recovery ends (a worker joins meanwhile; Faust's recovery goes on regardless):
        then ``assigned`` is no longer this worker's, and the next assignment's recovery
        starts the loader.
        """
        if not self._assignment_held:
            log.info("bulk: partitions revoked before the loader could start; not started")
            return
        self._cancel()
        tps = sorted(TopicPartition(tp.topic, tp.partition) for tp in assigned)
        if tps:
            self._task = asyncio.ensure_future(self._run(tps))

    def halt(self) -> None:
        """Stop at once (a revoke, a stop): nothing more is stored or committed."""
        self._assignment_held = False
        self._cancel()

    def _cancel(self) -> None:
        for task in (self._task, self._writing):
            if task is not None:
                task.cancel()
        self._task = self._writing = None

    async def _run(self, tps: list[TopicPartition]) -> None:
        attempt = 0
        while True:
            consumer = group.consumer_outside(self._pipe.settings)
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
                await consumer.stop()

    async def _seek_committed(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        committed = await group.committed_offsets(self._pipe.app, tps)
        for tp in tps:
            consumer.seek(tp, committed[tp])

    async def _load(self, consumer: AIOKafkaConsumer) -> bool:
        """Handle batch after batch; False once Faust's group has moved on.

        One batch is written while the next is handled: its table writes are seen
        by the next (``TableWrites.below``), and the next is sent only once it is
        written, so outputs never overtake each other on a partition.
        """
        below: Batch | None = None
        rest: Fetched = {}
        writing: asyncio.Task[bool] | None = None
        try:
            while True:
                if not rest:
                    rest = await consumer.getmany(
                        timeout_ms=group.FETCH_WAIT_MS,
                        max_records=self._pipe.settings.directory_batch,
                    )
                batch, handled, rest = await self._handle(rest, below) if rest else (None, {}, {})
                if batch is not None and batch.jobs:
                    try:
                        await self._compose(batch)  # while the batch before is written
                    except Exception:
                        if writing is not None:  # let it finish: its records are done
                            await writing
                        raise
                if writing is not None:
                    if not await writing:
                        return False
                    writing = None
                if batch is not None:
                    # Also in self._writing, for halt() to cancel at once.
                    writing = self._writing = asyncio.ensure_future(self._finish(batch, handled))
                below = batch
        finally:
            if writing is not None:
                writing.cancel()
            if self._writing is writing:  # not a newer loader's
                self._writing = None

    async def _handle(
        self, fetched: Fetched, below: Batch | None
    ) -> tuple[Batch, Fetched, Fetched]:
        """Handle records until the fetch is done or ``BATCH_TIME`` is up: the batch, the
        records it holds, and the records left for the next batch."""
        batch = Batch(self._pipe, below)
        handled: Fetched = {}
        tps = list(fetched)
        ends = time.perf_counter() + BATCH_TIME
        due = time.perf_counter() + SLICE
        for n, tp in enumerate(tps):
            stage, handle = self._stages[tp.topic]
            records = fetched[tp]
            for i, record in enumerate(records):
                try:
                    handle(record, batch)
                except Exception as exc:  # the record is at fault
                    batch.dead_letter(stage, record, exc)
                now = time.perf_counter()
                full = now >= ends or len(batch.jobs) >= COMPOSE_MAX
                if full and (i + 1 < len(records) or n + 1 < len(tps)):
                    handled[tp] = records[: i + 1]
                    rest = {tp: records[i + 1 :]} if i + 1 < len(records) else {}
                    rest.update((later, fetched[later]) for later in tps[n + 1 :])
                    return batch, handled, rest
                if now >= due:
                    await asyncio.sleep(0)
                    due = time.perf_counter() + SLICE
            handled[tp] = records
        return batch, handled, {}

    async def _compose(self, batch: Batch) -> None:
        """Compose the batch's notices and hand each its result, in the records' order."""
        jobs, batch.jobs = batch.jobs, []
        if self._composer is None:
            raise RuntimeError("a bulk stage composes notices, but the loader has no composer")
        results = await self._composer.compose([j.job for j in jobs])
        for job, result in zip(jobs, results, strict=True):
            try:
                job.then(result, batch)
            except Exception as exc:  # the record is at fault
                batch.dead_letter(job.stage, job.record, exc)

    async def _finish(self, batch: Batch, fetched: Fetched) -> bool:
        """Write a batch's outputs, then its table entries (changelog, then store), then
        commit its offsets."""
        done = {TP(tp.topic, tp.partition): recs[-1].offset + 1 for tp, recs in fetched.items()}
        if not done.keys() <= self._pipe.app.consumer.assignment():
            return False  # moved to another worker: write nothing (Faust's commit would
            # drop their offsets and report success)
        producer = self._pipe.app.producer._ensure_producer()
        partitions = self._pipe.settings.partitions
        if batch.sends:
            await write_all(producer, batch.sends, partitions)
        await write_entries(producer, batch.tables.values(), partitions)
        for writes in batch.tables.values():
            writes.below = None  # stored: the batch below is in the store too
        batch.below = None
        return await group.commit_assigned(self._pipe.app, done)


async def write_entries(producer: Any, tables: Iterable[TableWrites], partitions: int) -> None:
    """The entries of ``tables`` into their changelogs, then into the store with Faust's
    persisted offset: a store never holds an entry its changelog lacks, and a restart
    with the data dir kept reads each changelog only from there."""
    written = [(w, w.table.changelog_topic.get_topic_name()) for w in tables if w.entries]
    changelog: list[Send] = [
        (topic, k, v, w.partition) for w, topic in written for k, v in w.entries.items()
    ]
    if not changelog:  # some partitions were only read
        return
    offsets = await write_all(producer, changelog, partitions)
    for w, topic in written:
        scan.write(w.table, w.partition, w.entries, offsets[topic, w.partition])


def register(
    pipe: Pipeline,
    stages: Mapping[t.TopicSpec, tuple[str, Handler]],
    composer: Composer | None = None,
) -> BulkLoader:
    """Read ``stages``' topics in bulk on Faust's partitions: subscribed in its group,
    never fetched by it; the loader is started and halted by ``faust_fixes``."""
    loader = BulkLoader(pipe, stages, composer)
    for spec in stages:
        pipe.app.topics.add(pipe.topics[spec.name])
    faust_fixes.attach_bulk(pipe.app, loader)
    return loader
