"""What stages write to Kafka, flushed together once per batch of input records.

A stage sends its outputs without waiting for each one; the stage loop flushes
them together, once per batch of input records. Kafka or the network failing a
write is retried here, in place, without running the handler again (so deliver
does not mail twice because a parked notice's first write timed out).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from faust.streams import _current_event

from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.kafka import send_now

log = logging.getLogger("preaviso.stage")

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


@contextmanager
def as_current(event: Any) -> Iterator[None]:
    """Run a block as if Faust were handling ``event``: table writes go to its partition.

    Faust picks a table write's changelog partition and RocksDB store from the
    event being handled, which it keeps in a context variable. Work deferred past
    the handler (a ledger write after the flush) must be put back under its own event.
    """
    if event is None:
        yield
        return
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


@dataclass(frozen=True, slots=True)
class _Record:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None


@dataclass(slots=True)
class _Pending:
    record: _Record
    future: Awaitable[Any]
    owner: Any  # the input event this output is for


Failures = dict[int, tuple[Any, BaseException]]
"""Input records whose outputs Kafka refused for good: id(event) -> (event, error)."""


class Outbox:
    """Records stages produce, flushed together; each belongs to the input event it came from.

    ``current`` is the event the stage loop is handling; work running beside the
    loop (deliver's sends) names its event explicitly.
    """

    def __init__(self, pipe: Pipeline, stage: str = "stage") -> None:
        self._pipe = pipe
        self.stage = stage
        self.current: Any = None
        self._pending: list[_Pending] = []
        self._claims: dict[str, Any] = {}
        self._claimed_by: dict[int, list[str]] = {}

    async def send(
        self,
        spec: t.TopicSpec,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        *,
        event: Any = None,
    ) -> None:
        record = _Record(self._pipe.topic_name(spec), key, value, partition)
        owner = event if event is not None else self.current
        self._pending.append(_Pending(record, await self._produce(record), owner))

    def claim(self, name: str, *, event: Any = None) -> bool:
        """Claim ``name`` (a notice id) for ``event`` until the stage releases that record.

        False if another record holds it: the same notice twice in one batch, before
        the first one's ledger entry is written, is done once. A record given back
        unfinished (a stop) holds its claim until released, then whoever reads it
        again claims afresh.
        """
        owner = event if event is not None else self.current
        holder = self._claims.setdefault(name, owner)
        if holder is owner:
            self._claimed_by.setdefault(id(owner), []).append(name)
        return holder is owner

    def unclaim(self, event: Any) -> None:
        """The record is released (or failed): its claims end."""
        for name in self._claimed_by.pop(id(event), ()):
            if self._claims.get(name) is event:
                del self._claims[name]

    async def discard(self, event: Any = None) -> None:
        """After ``event``'s handler failed: let its writes settle, and forget them.

        Only that record's: what other records sent meanwhile (deliver's sends run
        beside the loop) stays, to be flushed.
        """
        owner = event if event is not None else self.current
        dropped = [p for p in self._pending if p.owner is owner]
        self._pending = [p for p in self._pending if p.owner is not owner]
        self.unclaim(owner)
        await _settle(p.future for p in dropped)

    async def flush(self) -> Failures:
        """Wait until every record sent so far is written; the input events Kafka refused.

        A transient failure is sent again until Kafka takes it. Every future is
        settled before this returns, so nothing is still in flight. An event with a
        refused output (too large: no retry helps) is returned for the stage to deal
        with.
        """
        failed: Failures = {}
        attempt = 0
        while self._pending:
            send_now(self._pipe.app.producer)
            batch, self._pending = self._pending, []
            outcomes = await _settle(p.future for p in batch)
            again: list[tuple[_Pending, Exception]] = []
            for pending, exc in zip(batch, outcomes, strict=True):
                if exc is None or id(pending.owner) in failed:
                    continue
                if is_transient(exc):
                    again.append((pending, exc))
                else:
                    failed[id(pending.owner)] = (pending.owner, exc)
            again = [(p, exc) for p, exc in again if id(p.owner) not in failed]
            if not again:
                continue
            attempt += 1
            self._retrying("writing to " + again[0][0].record.topic, again[0][1], attempt)
            await asyncio.sleep(backoff(attempt))
            for pending, _ in again:
                try:
                    pending.future = await self._produce(pending.record)
                except Exception as exc:  # refused for good this time: the record's to handle
                    failed[id(pending.owner)] = (pending.owner, exc)
                    continue
                self._pending.append(pending)
        return failed

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
            where(self.current),
            failure_name(exc),
            attempt,
            backoff(attempt),
        )


def where(event: Any) -> str:
    """The input record as topic[partition]@offset, for logs (never its contents)."""
    if event is None:
        return "-"
    msg = event.message
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"


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
