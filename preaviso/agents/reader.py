"""A Faust stage's topic read by a plain consumer and handed to the same stage loop.

Faust's streams cost deliver a fifth of the worker's CPU: each notice went through
Faust's consumer thread, its hand-over to the event loop, an ``Event`` and the stream's
iteration, ~80-100 µs a mail at 4 connections of the worker's ~450-590 µs
(docs/benchmarks.md). ``StageReader`` reads the
stage's topic as ``agents/bulk.py`` reads the directory: Faust keeps the partitions
(subscribed in its group, never fetched by it: ``faust_fixes``), a plain aiokafka
consumer fetches them from the group's committed offsets, and each record goes into
``StageLoop`` exactly as a Faust event did, so the loop's rules hold unchanged: held
until done and written, released in offset order per partition, retried or
dead-lettered, given back at a stop or rebalance.

A released record is committed through Faust's consumer (its member id and
generation: a reader whose partitions moved is refused), every ``COMMIT_INTERVAL``.
At a revoke the reader stops taking records and its loop finishes the records it
holds before Faust's revoke goes on (``faust_fixes``), as Faust waits for its own
streams: a send in flight ends and is recorded, a wait for the SMTP server ends at
once (the flow is suspended) and gives its record back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from preaviso.agents.outbox import Outbox, backoff, failure_name
from preaviso.agents.stage import BATCH_MAX, EventHandler, StageLoop
from preaviso.streams import faust_fixes, group
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline

log = logging.getLogger("preaviso.reader")

COMMIT_INTERVAL = 1.0
"""Seconds between commits of released records (Faust's own ``broker_commit_interval``)."""
DRAIN_MAX = 50.0
"""Seconds a revoke waits for the records the loop holds: a mail in flight takes
milliseconds, a wait for the SMTP server ends at once, an answer after DATA may take up
to ``PREAVISO_SMTP_DATA_TIMEOUT`` (the README: keep it under ~50 s, Faust gives a
rebalance 60 s). Past it they are cancelled, and read again by the next owner (the
ledger skips those already sent); a stop ends sooner anyway (its deadline, 25 s)."""


class _Message:
    """What ``StageLoop`` and the dead letters read of a Faust message."""

    __slots__ = ("acked", "generation_id", "key", "offset", "partition", "topic", "value")

    def __init__(self, record: Any, generation: int) -> None:
        self.topic: str = record.topic
        self.partition: int = record.partition
        self.offset: int = record.offset
        self.key: bytes | None = record.key
        self.value: bytes | None = record.value
        self.generation_id = generation
        self.acked = False  # set by ``hold.give_back``: never committed past

    def incref(self) -> None:
        """Faust's reference count; nothing else acks these records."""


class Record:
    """One fetched record as the stage loop takes it: ``ack`` marks it released."""

    __slots__ = ("__weakref__", "_released", "message")  # weakref: Faust's current event

    def __init__(self, message: _Message, released: Callable[[_Message], None]) -> None:
        self.message = message
        self._released = released

    def ack(self) -> None:
        if not self.message.acked:  # given back: nothing after it is committed either
            self.message.acked = True
            self._released(self.message)


class StageReader:
    """Reads ``source`` on the partitions Faust assigned and runs ``stage``'s loop over it."""

    def __init__(
        self,
        pipe: Pipeline,
        source: t.TopicSpec,
        stage: str,
        on_event: Callable[[Outbox], EventHandler],
        *,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self._pipe = pipe
        self.stage = stage
        self.topics = frozenset({pipe.topic_name(source)})
        self._on_event = on_event
        self._batch_max = batch_max
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._assignment_held = True
        self._generation = 0
        self._released: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}
        self._committing = asyncio.Lock()  # one commit at a time, in the order asked
        self._crashing: asyncio.Future[Any] | None = None

    def assigned(self) -> None:
        """Faust has a new assignment: the reader may start on it once its recovery ends."""
        self._assignment_held = True

    def start(self, assigned: set[Any]) -> None:
        """Read ``assigned`` (Faust's partitions of our topic): Faust's recovery is over."""
        if not self._assignment_held:
            log.info("%s: partitions revoked before the reader started; not started", self.stage)
            return
        if self._task is not None and not self._task.done():
            # One recovery per assignment, after a revoke that drained it: not seen.
            log.warning("%s: a run still going is cancelled by a new start", self.stage)
            self._task.cancel()
        tps = sorted(TopicPartition(tp.topic, tp.partition) for tp in assigned)
        self._generation += 1
        self._released, self._committed = {}, {}
        stopping = self._stopping = asyncio.Event()
        if tps:
            self._task = asyncio.ensure_future(self._run(tps, stopping))
            self._task.add_done_callback(self._ended)

    def halt(self) -> None:
        """Take no more records (a revoke, a stop); ``drained`` waits for those held."""
        self._assignment_held = False
        self._stopping.set()

    async def drained(self, seconds: float = DRAIN_MAX) -> None:
        """Return once the loop has finished the records it held (at most ``seconds``)."""
        task = self._task
        if task is None or task.done():
            return
        await asyncio.wait({task}, timeout=seconds)
        if not task.done():
            log.warning("%s: records still held after %.0fs; read again by the next owner",
                        self.stage, seconds)  # fmt: skip
            task.cancel()

    async def commit(self) -> None:
        """Commit the offsets after the records released so far, through Faust's consumer;
        halt if the group refuses or the partitions moved (nothing committed then)."""
        async with self._committing:
            due = {tp: o for tp, o in self._released.items() if self._committed.get(tp) != o}
            if due:
                await self._commit(due)

    async def prove(self) -> bool | None:
        """Commit again what the group holds from this reader (and what it released since):
        the group's answer says whether this worker still holds the partitions (the fence,
        after a stall). False once it refused (the reader halts); None before the reader
        knows its offsets."""
        if self._stopping.is_set():
            return False
        async with self._committing:
            offsets = {**self._committed, **self._released}
            return await self._commit(offsets) if offsets else None

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        generation = self._generation
        accepted = await group.commit_assigned(self._pipe.app, offsets)
        if generation != self._generation:  # a new assignment's run started meanwhile
            return accepted
        if accepted:
            self._committed.update(offsets)
            return True
        log.info("%s: partitions moved on (a rebalance); reader stops", self.stage)
        self.halt()
        return False

    def _release(self, message: _Message) -> None:
        if message.generation_id == self._generation:
            self._released[TP(message.topic, message.partition)] = message.offset + 1

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The loop never ends by itself but at a halt: anything else is a bug, and a
        worker that silently stopped delivering is worse than one that stops."""
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("%s: reader failed: %r; the worker stops", self.stage, exc)
            self._crashing = asyncio.ensure_future(self._pipe.app.crash(exc))

    async def _run(self, tps: list[TopicPartition], stopping: asyncio.Event) -> None:
        outbox = Outbox(self._pipe, self.stage)  # a run's own: its claims end with it
        loop = StageLoop(self.stage, outbox, self._on_event(outbox), batch_max=self._batch_max)
        fetched: deque[Any] = deque()
        records = self._records(tps, fetched, stopping)
        committing = asyncio.ensure_future(self._commit_every(stopping))
        try:
            await loop.run(records, lambda: len(fetched))
        finally:
            committing.cancel()
            await records.aclose()

    async def _records(
        self, tps: list[TopicPartition], fetched: deque[Any], stopping: asyncio.Event
    ) -> AsyncGenerator[Any, None]:
        """Each record of ``tps`` in offset order per partition, until the reader halts; a
        failed consumer is replaced, from the first record not taken yet."""
        generation = self._generation
        positions: dict[TopicPartition, int] = {}
        attempt = 0
        while not stopping.is_set():
            consumer: AIOKafkaConsumer | None = None
            try:
                consumer = group.consumer_outside(self._pipe.settings)
                await consumer.start()
                consumer.assign(tps)
                if not positions:
                    positions = await group.committed_offsets(self._pipe.app, tps)
                    if generation == self._generation:  # what ``prove`` commits again
                        self._committed.update((TP(tp.topic, tp.partition), o)
                                               for tp, o in positions.items())  # fmt: skip
                for tp in tps:
                    consumer.seek(tp, positions[tp])
                attempt = 0
                while not stopping.is_set():
                    if not fetched:
                        got = await consumer.getmany(
                            timeout_ms=group.FETCH_WAIT_MS, max_records=self._batch_max
                        )
                        for records in got.values():
                            fetched.extend(records)
                        continue
                    record = fetched.popleft()
                    positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
                    yield Record(_Message(record, generation), self._release)
            except Exception as exc:  # Kafka or the network: a new consumer, same positions
                fetched.clear()
                attempt += 1
                log.warning("%s: reading failed (%s); again in %.1fs", self.stage,
                            failure_name(exc), backoff(attempt))  # fmt: skip
                await asyncio.sleep(backoff(attempt))
            finally:
                if consumer is not None:
                    try:  # shielded: a cancellation must not leave the client open
                        await asyncio.shield(consumer.stop())
                    except Exception as exc:  # closing a broken client: nothing to keep
                        log.warning("%s: closing the consumer failed (%s)", self.stage,
                                    failure_name(exc))  # fmt: skip

    async def _commit_every(self, stopping: asyncio.Event) -> None:
        """Commit now and then while reading; the last commit is ``wait_for_readers``'."""
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            if stopping.is_set():
                return
            try:
                await self.commit()
            except Exception as exc:  # Faust's consumer not running; its own commit
                # errors never come here: Faust crashes the worker on them, as for its own
                log.warning("%s: commit failed (%s)", self.stage, failure_name(exc))


def read_stage(
    pipe: Pipeline,
    source: t.TopicSpec,
    stage: str,
    on_event: Callable[[Outbox], EventHandler],
    *,
    batch_max: int = BATCH_MAX,
) -> StageReader:
    """``run_stage`` on a plain consumer instead of a Faust agent (same handler, same
    loop): the topic is subscribed in Faust's group and never fetched by Faust."""
    reader = StageReader(pipe, source, stage, on_event, batch_max=batch_max)
    pipe.app.topics.add(pipe.topics[source.name])
    faust_fixes.attach_reader(pipe.app, reader)
    return reader
