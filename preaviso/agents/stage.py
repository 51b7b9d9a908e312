"""The loop every agent runs: no record is skipped, whatever fails.

Faust acks (and later commits) an event once the agent moves past it. So the loop
moves past a record only when the record is done: handled, with everything it
produced written to Kafka, or dead-lettered, with the dead letter written. When
Kafka or the network is at fault the same record is handled again until it works;
when the record itself is at fault it is dead-lettered. Nothing escapes the loop
but cancellation, which must reach the worker so it can stop.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from preaviso.schemas.records import KEY_PREVIEW_BYTES, VALUE_PREVIEW_BYTES, DeadLetter
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import encode

log = logging.getLogger("preaviso.stage")

EventHandler = Callable[[Any], Awaitable[None]]

REASON_CHARS = 4000
FIRST_DELAY = 0.1
MAX_DELAY = 5.0

RECORD_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


def is_transient(exc: BaseException) -> bool:
    """True when Kafka or the network, not the record, is at fault: retry, never dead-letter.

    A dead letter is for a record that will fail again however often it is tried
    (bad bytes, a wrong key, an unknown customer, an unsupported change, a bug).
    Dead-lettering a record because Kafka hiccuped would put a good record where
    only an operator replays it, and replaying a notice deliver had already sent
    mails it twice. Retrying is safe, because handlers are idempotent (ledgers).

    So every Kafka client error is transient, whether aiokafka marks it
    ``retriable`` or not (a timeout, a moving leader, a closed connection, missing
    rights: all heal or need an operator, and waiting loses nothing), except
    "record too large", which no retry can fix. The network's own
    ``ConnectionError`` and ``TimeoutError`` are transient too. Anything else is
    about the record. Wrapped errors (Faust's ``ProducerSendError``) are judged
    by their ``__cause__``.
    """
    for err in _causes(exc):
        if isinstance(err, KafkaError):
            return not isinstance(err, RECORD_TOO_LARGE)
        if isinstance(err, ConnectionError | TimeoutError):
            return True
    return False


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): 0.1 s doubling to 5 s."""
    return min(MAX_DELAY, FIRST_DELAY * 2.0 ** min(max(attempt - 1, 0), 16))


def failure_name(exc: BaseException) -> str:
    """Exception class names along the cause chain: what logs may say (never values)."""
    return " <- ".join(type(err).__name__ for err in _causes(exc))


class SendInterruptedError(ConnectionError):
    """A produce was cancelled before Kafka answered (the producer stopping): not the record."""


@dataclass(frozen=True, slots=True)
class _Record:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None


class Outbox:
    """Records a stage produces for one input record; all written before that record is acked.

    A send that fails for a transient reason is sent again here, in place, until
    Kafka takes it: the handler is not run again for it, so deliver does not mail
    twice because a receipt's first write timed out. A send that fails for a
    reason about the record (too large) is raised.
    """

    def __init__(self, pipe: Pipeline, stage: str = "stage") -> None:
        self._pipe = pipe
        self.stage = stage
        self.origin = "-"  # the input record, as topic[partition]@offset, for logs
        self._pending: list[tuple[_Record, Awaitable[Any]]] = []

    async def send(
        self, spec: t.TopicSpec, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        record = _Record(self._pipe.topic_name(spec), key, value, partition)
        self._pending.append((record, await self._produce(record)))

    async def flush(self) -> None:
        """Wait until every record sent since the last flush is written, re-sending as needed.

        Every future is settled before this returns or raises, so nothing from one
        input record is still in flight when the next one starts.
        """
        attempt = 0
        while self._pending:
            batch, self._pending = self._pending, []
            outcomes = await _settle(future for _, future in batch)
            failed = [
                (rec, exc) for (rec, _), exc in zip(batch, outcomes, strict=True) if exc is not None
            ]
            if not failed:
                return
            for _, exc in failed:
                if not is_transient(exc):
                    raise exc
            attempt += 1
            self._retrying("writing to " + failed[0][0].topic, failed[0][1], attempt)
            await asyncio.sleep(backoff(attempt))
            for record, _ in failed:
                self._pending.append((record, await self._produce(record)))

    async def discard(self) -> None:
        """After a failure: let whatever is still in flight settle, and forget it."""
        batch, self._pending = self._pending, []
        await _settle(future for _, future in batch)

    async def _produce(self, record: _Record) -> Awaitable[Any]:
        attempt = 0
        while True:
            try:
                future: Awaitable[Any] = await self._pipe.app.producer.send(
                    record.topic, record.key, record.value, record.partition, None, None
                )
                return future
            except Exception as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                self._retrying("sending to " + record.topic, exc, attempt)
                await asyncio.sleep(backoff(attempt))

    def _retrying(self, what: str, exc: BaseException, attempt: int) -> None:
        log.warning(
            "stage %s: %s for %s failed (%s); retry %d in %.1fs",
            self.stage,
            what,
            self.origin,
            failure_name(exc),
            attempt,
            backoff(attempt),
        )


async def _settle(futures: Iterable[Awaitable[Any]]) -> list[Exception | None]:
    """Wait for every future; the exception of each that failed, else None."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    outcomes: list[Exception | None] = []
    for result in results:
        if isinstance(result, Exception):
            outcomes.append(result)
        elif isinstance(result, BaseException):  # the future was cancelled, not this task
            outcomes.append(SendInterruptedError("the send was cancelled before Kafka answered"))
        else:
            outcomes.append(None)
    return outcomes


def _preview(data: bytes, limit: int) -> tuple[str, bool]:
    return base64.b64encode(data[:limit]).decode(), len(data) > limit


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dead_letter_for(event: Any, stage: str, exc: BaseException) -> DeadLetter:
    """Where the record is, a bounded copy of it and the reason: always small enough to write."""
    msg = event.message
    key = msg.key if isinstance(msg.key, bytes) else None
    value = msg.value if isinstance(msg.value, bytes) else b""
    key_text, key_truncated = _preview(key, KEY_PREVIEW_BYTES) if key is not None else (None, False)
    value_text, value_truncated = _preview(value, VALUE_PREVIEW_BYTES)
    return DeadLetter(
        stage=stage,
        reason=_bounded(str(exc), REASON_CHARS) or type(exc).__name__,
        error_type=type(exc).__name__[:200],
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=key_text,
        key_size=len(key) if key is not None else None,
        key_truncated=key_truncated,
        value=value_text,
        value_size=len(value),
        value_truncated=value_truncated,
        failed_at=datetime.now(UTC),
    )


def where(event: Any) -> str:
    msg = event.message
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"


class StageLoop:
    """One stage's loop: each record handled, retried or dead-lettered, never skipped."""

    def __init__(self, stage: str, outbox: Outbox, handle: EventHandler) -> None:
        self.stage = stage
        self.outbox = outbox
        self.handle = handle

    async def run(self, events: AsyncIterable[Any]) -> None:
        async for event in events:
            await self.process(event)

    async def process(self, event: Any) -> None:
        """Return once the record is done; raises nothing but cancellation.

        Faust acks an event when its stream moves on, and also when the agent is
        torn down in the middle of it (a stop, a crash): the stream's generator acks
        in a ``finally``, and the stop commits it, so a notice half sent at a SIGTERM
        was skipped for good. Holding a reference to the message until the record is
        done makes that last ack a no-op: an interrupted record is never committed.
        """
        event.message.incref()
        await self._process(event)
        event.ack()  # drop our reference; the stream's own ack then completes it

    async def _process(self, event: Any) -> None:
        self.outbox.origin = where(event)
        attempt = 0
        while True:
            try:
                await self.handle(event)
                await self.outbox.flush()
                return
            except Exception as exc:
                await self.outbox.discard()
                if not is_transient(exc):
                    await self.dead_letter(event, exc)
                    return
                attempt += 1
                log.warning(
                    "stage %s: %s failed (%s); handling it again, retry %d in %.1fs",
                    self.stage,
                    self.outbox.origin,
                    failure_name(exc),
                    attempt,
                    backoff(attempt),
                )
                await asyncio.sleep(backoff(attempt))

    async def dead_letter(self, event: Any, exc: BaseException) -> None:
        """Write the dead letter, retrying for as long as it takes: until then, no moving on."""
        attempt = 0
        while True:
            try:
                letter = dead_letter_for(event, self.stage, exc)
                key = event.message.key if not letter.key_truncated else None
                await self.outbox.send(t.DEAD_LETTERS, key, encode(letter))
                await self.outbox.flush()
            except Exception as write_exc:
                await self.outbox.discard()
                attempt += 1
                log.warning(
                    "stage %s: cannot write the dead letter for %s (%s); retry %d in %.1fs",
                    self.stage,
                    self.outbox.origin,
                    failure_name(write_exc),
                    attempt,
                    backoff(attempt),
                )
                await asyncio.sleep(backoff(attempt))
                continue
            # The reason stays in the dead letter: it may quote values, logs must not.
            log.warning(
                "stage %s: dead-lettered %s: %s", self.stage, self.outbox.origin, letter.error_type
            )
            return


def run_stage(
    pipe: Pipeline,
    source: t.TopicSpec,
    stage: str,
    on_event: Callable[[Outbox], EventHandler],
) -> Any:
    """Register one agent (concurrency 1) that runs a handler over each record of ``source``.

    Records are taken one at a time with ``stream.events()``: Faust's batching
    (``take``/``take_events``) was seen to strand the last records of a burst here,
    a known upstream bug, and a notice must never be stranded.
    """
    outbox = Outbox(pipe, stage)

    async def agent(stream: Any) -> None:
        await StageLoop(stage, outbox, on_event(outbox)).run(stream.events())

    agent.__name__ = agent.__qualname__ = f"stage_{stage.replace('-', '_')}"  # names it in logs
    return pipe.app.agent(pipe.topics[source.name], name=stage, concurrency=1)(agent)
