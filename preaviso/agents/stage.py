"""The loop every agent runs: records in batches, none skipped, whatever fails.

Faust commits an offset once the event is acked. A stage holds a reference to
each record (``incref``) until the record is done: handled, with everything it
produced written to Kafka, or dead-lettered, with the dead letter written. Records
are handled one by one as they arrive, but their outputs are flushed together,
once per batch: when nothing more is waiting, or after ``BATCH_MAX`` records.
Only then are they released, in offset order per partition, so a committed
offset never passes a record that is not done.

Part of a record's work may run beside the loop (deliver's SMTP sends): the
handler returns it, and the record is released once it has finished and its
outputs are written. When Kafka or the network is at fault the same record is
handled again until it works; when the record itself is at fault it is
dead-lettered. Nothing escapes the loop but cancellation, which must reach the
worker so it can stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from preaviso.agents.dead_letters import dead_letter_record
from preaviso.agents.outbox import Failures, as_current, backoff, failure_name, is_transient, where
from preaviso.agents.outbox import Outbox as Outbox  # stages import it from here
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline

log = logging.getLogger("preaviso.stage")

Beside = Awaitable[None]
"""The rest of a record's work, to run beside the loop (a send in flight)."""
EventHandler = Callable[[Any], Awaitable[Beside | None]]

BATCH_MAX = 500
"""Records handled before their outputs are flushed, at the latest."""
HELD_MAX = 5000
"""Records held unreleased before the loop waits: done ones behind a slow one, in flight."""
LINGER = 0.05
"""Seconds the loop waits for a next record before it flushes what it holds anyway."""


class _End:
    """The stream ended (only ever in tests: a Faust stream does not end)."""


_END = _End()


@dataclass(eq=False, slots=True)
class _Held:
    event: Any
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None  # the record failed after its handler returned

    def finished(self) -> bool:
        return self.task is None or self.task.done()


def _tp(event: Any) -> tuple[str, int]:
    return event.message.topic, event.message.partition


def _nothing_waiting() -> int:
    return 0


class StageLoop:
    """One stage's loop: records handled in batches, retried or dead-lettered, never skipped."""

    def __init__(
        self,
        stage: str,
        outbox: Outbox,
        handle: EventHandler,
        *,
        batch_max: int = BATCH_MAX,
        held_max: int = HELD_MAX,
        linger: float = LINGER,
    ) -> None:
        self.stage = stage
        self.outbox = outbox
        self.handle = handle
        self.batch_max = batch_max
        self.held_max = max(held_max, batch_max)
        self.linger = linger
        self._held: dict[tuple[str, int], deque[_Held]] = {}
        self._by_event: dict[int, _Held] = {}
        self._let_go_after: dict[tuple[str, int], tuple[Any, int]] = {}
        self._lock = asyncio.Lock()
        self._idle = False
        self._idle_since = 0.0
        self._soon: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        return len(self._by_event)

    async def run(
        self, events: AsyncIterable[Any], waiting: Callable[[], int] = _nothing_waiting
    ) -> None:
        """Handle every record of ``events``; ``waiting`` says how many are already fetched.

        A batch ends when nothing is waiting (so no record waits for a flush while
        the loop waits for the next one) or when it is full.
        """
        records = aiter(events)
        try:
            while True:
                if self.held and (waiting() <= 0 or self.held >= self.batch_max):
                    await self.complete()
                    await self._bounded()
                event = await self._next(records)
                if isinstance(event, _End):
                    break
                await self.process(event)
            while self.held:
                await self._wait_beside()
                await self.complete()
        finally:
            self._cancel_beside()

    async def _next(self, records: Any) -> Any:
        if not self.held:
            return await anext(records, _END)
        # Safety net: should the next record not come although one seemed to be
        # waiting, the watchdog flushes and releases what is held anyway.
        self._idle_since = asyncio.get_running_loop().time()
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.ensure_future(self._watch())
        self._idle = True
        try:
            return await anext(records, _END)
        finally:
            self._idle = False

    async def _watch(self) -> None:
        """While records are held: complete them once the loop waited ``linger`` for more."""
        loop = asyncio.get_running_loop()
        while self.held:
            await asyncio.sleep(self.linger)
            if self._idle and loop.time() - self._idle_since >= self.linger:
                await self._complete_quietly()

    async def process(self, event: Any) -> None:
        """Handle one record; it stays held until ``complete`` finds it done and written.

        Faust acks an event when its stream moves on, and also when the agent is
        torn down in the middle of it (a stop, a crash): the stream's generator acks
        in a ``finally``, and the stop commits it. Holding a reference to the
        message until the record is done makes those acks no-ops.
        """
        event.message.incref()
        async with self._lock:
            tp = _tp(event)
            entry = _Held(event)
            queue = self._held.get(tp)
            if queue is None:
                queue = self._held[tp] = deque()
            queue.append(entry)
            self._by_event[id(event)] = entry
            self.outbox.current = event
            with as_current(event):  # for a stage reader's records; Faust's set it already
                try:
                    beside = await self.handle(event)
                except Exception as exc:
                    await self.outbox.discard(event)
                    await self._alone(event, exc)
                    return
                if beside is not None:  # its task copies the current event
                    entry.task = asyncio.ensure_future(self._beside(entry, beside))
                    entry.task.add_done_callback(self._on_beside_done)

    async def _beside(self, entry: _Held, work: Beside) -> None:
        try:
            await work
        except Exception as exc:
            entry.error = exc
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the loop ends (a stop, a drain cut off): nothing held is released
            entry.error = exc  # cancelled from within, a bug: never released as done

    def _on_beside_done(self, _: object) -> None:
        if self._idle:
            self._complete_soon()

    async def complete(self) -> None:
        """Flush every output, then release the records that are done, in order per partition.

        Only records done before the flush began are released: their outputs were
        all in it. A record whose work failed is handled again alone (retried, or
        dead-lettered) before it is released.
        """
        async with self._lock:
            done = {id(entry) for entry in self._by_event.values() if entry.finished()}
            await self._flush()
            for tp, queue in self._held.items():
                while queue and id(queue[0]) in done:
                    entry = queue.popleft()
                    del self._by_event[id(entry.event)]
                    if entry.error is not None:
                        await self._alone(entry.event, entry.error)
                    self._release(tp, entry.event)

    def _release(self, tp: tuple[str, int], event: Any) -> None:
        """Drop our reference; once a record was let go, those after it are let go too.

        A record is let go (``message.acked`` set, never acked) when the worker stops
        or rebalances while it waits; Faust then commits below it. Acking a later
        record of the same partition would let the commit pass over it. Records read
        again after the rebalance (an offset not above it, or a new generation) are
        released as usual.
        """
        msg = event.message
        generation = getattr(msg, "generation_id", None)
        marker = self._let_go_after.get(tp)
        if marker is not None and (marker[0] != generation or msg.offset <= marker[1]):
            del self._let_go_after[tp]
            marker = None
        if marker is None and getattr(msg, "acked", False):
            self._let_go_after[tp] = (generation, msg.offset)
        elif marker is not None:
            msg.acked = True
        self.outbox.unclaim(event)
        event.ack()

    async def _flush(self, alone: Any = None) -> Failures:
        """Flush every output; each held record Kafka refused is marked, to be handled alone.

        ``alone`` is the record being handled on its own now: it deals with its own
        refusal. Every flush goes through here, so another record's refusal is never
        dropped, whichever record's work triggered the flush.
        """
        failed = await self.outbox.flush()
        for event_id, (_, exc) in failed.items():
            entry = self._by_event.get(event_id)
            if entry is not None and event_id != id(alone):
                entry.error = exc
        return failed

    async def _alone(self, event: Any, error: BaseException | None) -> None:
        """One record on its own, until it is done: retried while transient, else dead-lettered."""
        self.outbox.current = event
        attempt = 0
        while True:
            if error is None:
                try:
                    with as_current(event):  # table writes go to its partition
                        beside = await self.handle(event)
                        if beside is not None:
                            await beside
                    failed = await self._flush(alone=event)
                except Exception as exc:
                    await self.outbox.discard(event)
                    error = exc
                else:
                    if id(event) not in failed:
                        return
                    error = failed[id(event)][1]
            if not is_transient(error):
                await self.dead_letter(event, error)
                return
            attempt += 1
            log.warning(
                "stage %s: %s failed (%s); handling it again, retry %d in %.1fs",
                self.stage,
                where(event),
                failure_name(error),
                attempt,
                backoff(attempt),
            )
            await asyncio.sleep(backoff(attempt))
            error = None

    async def dead_letter(self, event: Any, exc: BaseException) -> None:
        """Write the dead letter, retrying for as long as it takes: until then, no moving on."""
        attempt = 0
        while True:
            try:
                key, letter = dead_letter_record(event, self.stage, exc)
                await self.outbox.send(t.DEAD_LETTERS, key, letter, event=event)
                failed = await self._flush(alone=event)
                if id(event) in failed:
                    raise failed[id(event)][1]
            except Exception as write_exc:
                await self.outbox.discard(event)
                attempt += 1
                log.warning(
                    "stage %s: cannot write the dead letter for %s (%s); retry %d in %.1fs",
                    self.stage,
                    where(event),
                    failure_name(write_exc),
                    attempt,
                    backoff(attempt),
                )
                await asyncio.sleep(backoff(attempt))
                continue
            # The reason stays in the dead letter: it may quote values, logs must not.
            log.warning(
                "stage %s: dead-lettered %s: %s", self.stage, where(event), type(exc).__name__
            )
            return

    async def _bounded(self) -> None:
        """Wait while too many records are held (a slow send at the head of a partition)."""
        while self.held >= self.held_max and await self._wait_beside(first=True):
            await self.complete()

    async def _wait_beside(self, *, first: bool = False) -> bool:
        tasks = [e.task for e in self._by_event.values() if e.task is not None and not e.finished()]
        if tasks:
            await asyncio.wait(tasks, return_when="FIRST_COMPLETED" if first else "ALL_COMPLETED")
        return bool(tasks)

    def _complete_soon(self) -> None:
        if self._soon is None or self._soon.done():
            self._soon = asyncio.ensure_future(self._complete_quietly())

    async def _complete_quietly(self) -> None:
        try:
            await self.complete()
        except Exception:  # a bug: the records stay held (stalled, not lost), and it is logged
            log.exception("stage %s: releasing records failed", self.stage)

    def _cancel_beside(self) -> None:
        for entry in self._by_event.values():
            if entry.task is not None:
                entry.task.cancel()
        for task in (self._soon, self._watchdog):
            if task is not None:
                task.cancel()


def queued(stream: Any) -> int:
    """Records Faust has fetched for this stream that the loop has not taken yet."""
    queue = getattr(getattr(stream, "channel", None), "queue", None)
    return queue.qsize() if queue is not None else 0


def run_stage(
    pipe: Pipeline,
    source: t.TopicSpec,
    stage: str,
    on_event: Callable[[Outbox], EventHandler],
    *,
    batch_max: int = BATCH_MAX,
) -> Any:
    """Register one agent (concurrency 1) that runs a handler over each record of ``source``.

    Records are taken one at a time with ``stream.events()`` and batched here:
    Faust's own batching (``take``/``take_events``) was seen to strand the last
    records of a burst, a known upstream bug, and a notice must never be stranded.
    """

    async def agent(stream: Any) -> None:
        # An outbox of its own each time Faust (re)starts the agent: claims held by a loop
        # that ended must not outlive it (``Outbox.claim``), as with a reader's runs.
        outbox = Outbox(pipe, stage)
        loop = StageLoop(stage, outbox, on_event(outbox), batch_max=batch_max)
        await loop.run(stream.events(), lambda: queued(stream))

    agent.__name__ = agent.__qualname__ = f"stage_{stage.replace('-', '_')}"  # names it in logs
    return pipe.app.agent(pipe.topics[source.name], name=stage, concurrency=1)(agent)
