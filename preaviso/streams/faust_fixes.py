"""The one place where Preaviso changes faust-streaming's behaviour: seek before resume.

faust-streaming 0.15.3 ends a table recovery (``Recovery.on_recovery_completed``,
or ``Recovery._resume_streams`` when there is nothing to restore) by *first*
resuming the stream partitions, *then* awaiting ``perform_seek()`` to rewind them to
the committed offsets, and *then* calling ``app.flow_control.resume()``, which
clears every agent queue. While the seek is awaited the fetcher is running (flow
was resumed to read the changelogs), so records of the stream partitions are
fetched, put into the agents' queues and recorded as read. The queues are then
cleared, and the re-fetched copies fall below the recorded read offset and are
dropped ("DROPPED MESSAGE ROFF"). The commit then either freezes at the hole (a
stalled partition) or, when Faust treats the jump as a gap, moves past it: the
notices are lost. Write-up and reproducer: docs/faust-recovery-bug.md.

The fix keeps Faust's steps and changes their order: seek while the stream
partitions are still paused (nothing of theirs can be in flight), clear the
queues (only records from before the rebalance can be there), and only then
resume the partitions, so the first record fetched is the committed one.

Two more holes of the same kind, found with the same experiment (kill -9 at 30 %,
restart with an empty data dir: all of a partition's first ~220 notices skipped
and committed over):

- Faust hands its *live* set of active partitions to aiokafka's
  ``fetched_records(partitions)``, which runs in the consumer thread and may wait
  for data. If the set is emptied meanwhile (the changelog partitions are paused
  when a recovery ends), aiokafka reads the empty set as "every partition" and
  returns the buffered records of paused stream partitions; Faust then skips
  them, because they are not active, but their position has already moved on.
  Fix: hand aiokafka a snapshot taken when the fetch is asked for. And a fetch
  can wait through a whole rebalance, then return records of partitions paused
  by then: those are put back (a seek to the first of them), not skipped.
- ``perform_seek`` rewinds only partitions with a committed offset above 0
  (aiokafka's ``seek_to_committed`` skips ``None`` and ``0``), so records fetched
  and then abandoned on a never-committed partition are never read again, and
  Faust, which has no committed offset to compare with, commits over the hole.
  Fix: partitions without a committed offset go back to offset 0, the beginning
  (the app's ``auto_offset_reset`` is ``earliest``, which also applies should the
  log start later); changelogs are left to recovery.

And one change for speed, with the same behaviour: Faust's fetch loop hands every
record to its streams through ``Service.wait_first``, four tasks and an
``asyncio.wait`` per record (~28 µs, half of Faust's cost per event), so that a
rebalance can interrupt a hand-over that waits for room in a full queue. Nearly
every hand-over does not wait: ``wait_first`` below runs it inline up to its first
wait, and only one that does wait goes on as Faust's tasks, unchanged.

And one stall: Faust builds its consumer with ``fetch_max_wait_ms=1500``, fixed in its
code. aiokafka sends one fetch at a time to a broker, and leaves out the partitions
that are paused or still hold fetched records; when every partition left is quiet,
the broker holds that fetch for 1.5 s, and a stream partition that has room again
meanwhile waits for it to come back. Deliver stood idle for 0.4-0.85 s in the middle
of benchmark runs. Fix: the worker's consumer waits ``FETCH_MAX_WAIT`` (a new record
still comes back at once; an idle worker asks ten times a second).

And one crash: Faust's livelock check (``verify_event_path``, every few seconds) reads
each assigned partition's position, and aiokafka asserts that there is one. Right
after a rebalance a partition can be assigned and fetched for before its position
is set; the check then crashed the consumer, and the worker with it (seen once in
the chaos test). Fix: a partition without a position yet is not checked.

The bulk stages (``agents/bulk.py``: the directory, notify) and deliver (``agents/reader.py``)
read their topics themselves: after a recovery those partitions stay paused for Faust and
go to the loader and the readers, and a revoke (or a stop) halts them before Faust's own
revoke goes on; where Faust then waits for its streams, it waits for the records the
readers hold too. A revoke can also come after an assignment and before its recovery
ends (Faust's recovery goes on): the loader then stays halted, since the partitions that
recovery started for are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from typing import Any

from aiokafka import TopicPartition
from faust.app.base import App
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from mode.services import WaitResults

__all__ = ["applied", "apply", "revert"]

log = logging.getLogger("preaviso.faust_fixes")

BUFFERED_POLL = 0.02
"""Seconds a fetch waits while a partition is paused for a full stream queue (Faust: 1)."""

FETCH_MAX_WAIT = 0.1
"""Seconds the broker may hold a fetch of the worker's consumer that finds no record
(Faust: 1.5); as long as a stream partition with room again may wait to be fetched."""

_ORIGINAL: dict[tuple[type, str], Any] = {
    (Recovery, "on_recovery_completed"): Recovery.on_recovery_completed,
    (Recovery, "_resume_streams"): Recovery._resume_streams,
    (AIOKafkaConsumerThread, "getmany"): AIOKafkaConsumerThread.getmany,
    (AIOKafkaConsumerThread, "_fetch_records"): AIOKafkaConsumerThread._fetch_records,
    (AIOKafkaConsumerThread, "seek_to_committed"): AIOKafkaConsumerThread.seek_to_committed,
    (Consumer, "wait_first"): Consumer.wait_first,
    (Consumer, "_wait_next_records"): Consumer._wait_next_records,
    (TableManager, "on_partitions_revoked"): TableManager.on_partitions_revoked,
    (TableManager, "on_rebalance"): TableManager.on_rebalance,
    (App, "_on_rebalance_when_stopped"): App._on_rebalance_when_stopped,
    (App, "_consumer_wait_empty"): App._consumer_wait_empty,
    (AIOKafkaConsumerThread, "verify_event_path"): AIOKafkaConsumerThread.verify_event_path,
    (
        AIOKafkaConsumerThread,
        "_create_worker_consumer",
    ): AIOKafkaConsumerThread._create_worker_consumer,
}


async def _seek_then_resume(recovery: Any) -> None:
    """Rewind the paused stream partitions, drop stale queued records, then fetch."""
    app = recovery.app
    consumer = app.consumer
    generation = getattr(app, "consumer_generation_id", 0)
    assignment = consumer.assignment()
    loaders = _loaders(app)
    held = frozenset().union(*(loader.topics for loader in loaders))
    streams = {tp for tp in assignment if not recovery._is_changelog_tp(tp)}
    loaded = {tp for tp in streams if tp.topic in held}
    streams -= loaded
    if assignment:
        recovery.log.info("Seek stream partitions to committed offsets (paused).")
        await recovery._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    recovery.completed.set()
    app.flow_control.resume()  # clears the queues: nothing fetched since the seek is there
    consumer.resume_partitions(streams)
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    if getattr(app, "consumer_generation_id", 0) != generation:
        return  # another rebalance came meanwhile: its own recovery starts the loaders
    for loader in loaders:  # unless a revoke came since the assignment
        loader.start({tp for tp in loaded if tp.topic in loader.topics})


def attach_bulk(app: Any, loader: Any) -> None:
    """Hand the bulk loader (``agents/bulk.py``) to the recovery and revoke steps below."""
    app.preaviso_bulk = loader


def attach_reader(app: Any, reader: Any) -> None:
    """Hand a stage reader (``agents/reader.py``) to the recovery and revoke steps below."""
    app.preaviso_readers = [*getattr(app, "preaviso_readers", ()), reader]


def _loaders(app: Any) -> list[Any]:
    """The bulk loader and the stage readers: whatever reads partitions Faust holds."""
    bulk = getattr(app, "preaviso_bulk", None)
    return [*([bulk] if bulk is not None else []), *getattr(app, "preaviso_readers", ())]


def halt_bulk_on_revoke(tables: Any, revoked: Any) -> None:
    """Faust's ``TableManager.on_partitions_revoked`` (a rebalance or a stop), with the
    bulk loader halted first: it stores and commits nothing once this returns. Stage
    readers take no more records; their loops finish what they hold in
    ``wait_for_readers``, where Faust waits for its own streams."""
    for loader in _loaders(tables.app):
        loader.halt()
    _ORIGINAL[TableManager, "on_partitions_revoked"](tables, revoked)


async def wait_for_readers(app: Any, consumer: Any, logger: Any) -> None:
    """Faust's ``App._consumer_wait_empty`` (a revoke or a stop, the flow suspended): the
    stage readers' loops finish the records they hold first, as Faust's streams do."""
    readers = getattr(app, "preaviso_readers", ())
    for reader in readers:
        reader.halt()  # a stop comes here without a revoke
    await asyncio.gather(*(reader.drained() for reader in readers))
    for reader in readers:  # as Faust commits its streams' records here: none read twice
        try:
            await reader.commit()
        except Exception as exc:  # only read again: the others and Faust go on
            log.warning("%s: commit after the drain failed: %r", reader.stage, exc)
    await _ORIGINAL[App, "_consumer_wait_empty"](app, consumer, logger)


async def note_assignment(
    tables: Any, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
) -> None:
    """Faust's ``TableManager.on_rebalance`` (a new assignment, before its recovery), told to
    the bulk loader first: a revoke from here on means the recovery's partitions are gone."""
    for loader in _loaders(tables.app):
        loader.assigned()
    await _ORIGINAL[TableManager, "on_rebalance"](
        tables, assigned, revoked, newly_assigned, generation_id
    )


def halt_bulk_on_stop(app: Any) -> None:
    """Faust's ``App._on_rebalance_when_stopped`` (a stopping worker's partitions go), with
    the bulk loader halted first: a stop skips the revoke above, and the loader would go on
    writing for partitions other workers take over until the process ends."""
    for loader in _loaders(app):
        loader.halt()
    _ORIGINAL[App, "_on_rebalance_when_stopped"](app)


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery.on_recovery_completed`` with the seek moved before the resume."""
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    for table in self.tables.values():
        await table.on_recovery_completed(
            self.actives_for_table[table], self.standbys_for_table[table]
        )
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again: generation %r", generation_id)
        return
    await _seek_then_resume(self)
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery._resume_streams`` (nothing to restore) with the same order."""
    await self.app.on_rebalance_complete.send()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again: generation %r", generation_id)
        return
    await _seek_then_resume(self)
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def getmany(self: Any, active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109
    """Fetch only from the partitions active now, not from whatever the set holds later."""
    snapshot = frozenset(active_partitions) if active_partitions is not None else None
    if self.consumer._buffered_partitions:
        timeout = min(timeout, BUFFERED_POLL)
    return await _ORIGINAL[AIOKafkaConsumerThread, "getmany"](self, snapshot, timeout)


async def _fetch_records(
    self: Any,
    consumer: Any,
    active_partitions: Any,
    timeout: Any = None,  # noqa: ASYNC109 (Faust's signature)
    max_records: Any = None,
) -> Any:
    """Hand Faust only records of partitions still active; put the others back.

    A fetch can wait through a whole rebalance (aiokafka waits for the new
    assignment) and then return records of partitions that are paused by now;
    Faust would skip them with their position already moved on. Seeking back to
    the first of them makes the consumer fetch them again once they are resumed.
    """
    original = _ORIGINAL[AIOKafkaConsumerThread, "_fetch_records"]
    records = await original(
        self, consumer, active_partitions, timeout=timeout, max_records=max_records
    )
    live = self.consumer._active_partitions or set()
    buffered = self.consumer._buffered_partitions
    kept = {}
    for tp, messages in records.items():
        if tp in live or tp in buffered:
            kept[tp] = messages
        elif messages and tp in consumer.assignment():
            consumer.seek(tp, messages[0].offset)
    return kept


async def seek_to_committed(self: Any) -> Any:
    """Seek to the committed offsets, and never-committed stream partitions to the start."""
    consumer = self._ensure_consumer()
    is_changelog = self.consumer._is_changelog_tp

    async def rewind() -> Any:
        committed = await consumer.seek_to_committed()
        never = [tp for tp, offset in committed.items() if not offset and not is_changelog(tp)]
        for tp in never:
            # Offset 0, not seek_to_beginning: its ListOffsets round trip took 0.5-1.2 s at
            # times after a rebalance, the streams paused meanwhile. Below the log start,
            # the first fetch's out-of-range reset (earliest) moves the partition there.
            consumer.seek(tp, 0)
        return committed

    return await self.call_thread(rewind)


class Resumed:
    """The rest of a coroutine that was run by hand up to its first wait.

    Awaiting it passes on the future the coroutine waits for, exactly as ``await``
    would have, then drives the coroutine on: so it can go on in another task.
    """

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coro, self._waiting_on = coro, waiting_on

    def __await__(self) -> Generator[Any, None, Any]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                yield waiting_on
            except BaseException as exc:  # cancellation too: the coroutine decides
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting_on = coro.send(None)
                except StopIteration as done:
                    return done.value


async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109
    """Faust's ``wait_first`` for its fetch loop, with the first coroutine run inline.

    If it finishes without waiting (the usual hand-over of a record), that is the
    result, and no task was made. If it waits, it goes on as Faust's own
    ``wait_first`` would run it, beside the other waits, from where it stopped.
    """
    original = _ORIGINAL[Consumer, "wait_first"]
    first, others = coros[0], coros[1:]
    if not asyncio.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
        return await original(self, *coros, timeout=timeout)
    try:
        waiting_on = first.send(None)
    except StopIteration as done:
        _close(others)
        return WaitResults([first], [done.value], False)
    except BaseException:
        _close(others)
        raise
    return await original(self, Resumed(first, waiting_on), *others, timeout=timeout)


def _close(coros: tuple[Any, ...]) -> None:
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()


async def _wait_next_records(self: Any, timeout: float) -> Any:  # noqa: ASYNC109
    """Faust's, except when every partition is paused for a full stream queue.

    Faust then sleeps a whole second before it looks again, though the queues
    drain in milliseconds; look again after ``BUFFERED_POLL`` instead.
    """
    if self.flow_active and self._buffered_partitions and not self._get_active_partitions():
        await asyncio.sleep(BUFFERED_POLL)
        return {}, set()
    return await _ORIGINAL[Consumer, "_wait_next_records"](self, timeout)


def verify_event_path(self: Any, now: float, tp: TP) -> None:
    """Faust's livelock check, except for a partition with no position yet (just
    assigned, not sought): there is nothing to check, and reading it would assert."""
    subscription = self._ensure_consumer()._fetcher._subscriptions.subscription
    assignment = subscription.assignment if subscription is not None else None
    state = assignment.state_value(TopicPartition(tp.topic, tp.partition)) if assignment else None
    if state is not None and not state.has_valid_position:
        return None
    return _ORIGINAL[AIOKafkaConsumerThread, "verify_event_path"](self, now, tp)  # type: ignore[no-any-return]


def create_worker_consumer(self: Any, transport: Any) -> Any:
    """Faust's worker consumer, with fetches held ``FETCH_MAX_WAIT`` at most. aiokafka
    reads the setting when the consumer starts, which is later."""
    consumer = _ORIGINAL[AIOKafkaConsumerThread, "_create_worker_consumer"](self, transport)
    consumer._fetch_max_wait_ms = int(FETCH_MAX_WAIT * 1000)
    return consumer


_FIXED: dict[tuple[type, str], Any] = {
    (Recovery, "on_recovery_completed"): on_recovery_completed,
    (Recovery, "_resume_streams"): _resume_streams,
    (AIOKafkaConsumerThread, "getmany"): getmany,
    (AIOKafkaConsumerThread, "_fetch_records"): _fetch_records,
    (AIOKafkaConsumerThread, "seek_to_committed"): seek_to_committed,
    (Consumer, "wait_first"): wait_first,
    (Consumer, "_wait_next_records"): _wait_next_records,
    (TableManager, "on_partitions_revoked"): halt_bulk_on_revoke,
    (TableManager, "on_rebalance"): note_assignment,
    (App, "_on_rebalance_when_stopped"): halt_bulk_on_stop,
    (App, "_consumer_wait_empty"): wait_for_readers,
    (AIOKafkaConsumerThread, "verify_event_path"): verify_event_path,
    (AIOKafkaConsumerThread, "_create_worker_consumer"): create_worker_consumer,
}


def apply() -> None:
    """Install the fixes (idempotent); ``create_app`` calls it for every app."""
    for (owner, name), fixed in _FIXED.items():
        setattr(owner, name, fixed)


def revert() -> None:
    """Restore Faust's own behaviour: to reproduce the upstream bugs side by side."""
    for (owner, name), original in _ORIGINAL.items():
        setattr(owner, name, original)


def applied() -> bool:
    return all(getattr(owner, name) is fixed for (owner, name), fixed in _FIXED.items())
