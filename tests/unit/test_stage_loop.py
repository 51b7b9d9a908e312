"""The stage loop never skips a record: it retries what Kafka got wrong, dead-letters the rest."""

from __future__ import annotations

import asyncio
import base64
import inspect
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import errors as kafka_errors

from preaviso.agents import outbox as outbox_module
from preaviso.agents import stage
from preaviso.agents.audience import UnsupportedChangeError
from preaviso.agents.dead_letters import dead_letter_for
from preaviso.agents.directory import KeyMismatchError
from preaviso.agents.notify import UnknownCustomerError
from preaviso.agents.stage import Outbox, StageLoop, backoff, is_transient
from preaviso.schemas.records import DeadLetter
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import DecodeError, decode, encode
from tests.unit.stage_fakes import (
    LETTERS,
    OUTPUT,
    SOURCE,
    FakeProducer,
    record,
    stream,
    wrapped,
)

Handler = Callable[[Outbox, Any, int], Awaitable[None]]


class Harness:
    """One stage over fake Kafka: what the handler saw and what was written, in order."""

    def __init__(self, handler: Handler) -> None:
        self.history: list[str] = []
        self.producer = FakeProducer(self.history)
        app = SimpleNamespace(producer=self.producer)
        self.outbox = Outbox(
            Pipeline(settings=Settings(topic_prefix="t."), app=app), "directory-ownerships"
        )
        self.calls: dict[int, int] = {}

        async def handle(event: Any) -> None:
            offset = event.message.offset
            self.calls[offset] = self.calls.get(offset, 0) + 1
            self.history.append(f"handle {offset}")
            await handler(self.outbox, event, self.calls[offset])

        self.loop = StageLoop("directory-ownerships", self.outbox, handle)

    async def run(self, *events: Any) -> None:
        await asyncio.wait_for(self.loop.run(stream(*events)), 5)

    def letters(self) -> list[DeadLetter]:
        return [decode(DeadLetter, value) for _, value in self.producer.on(LETTERS)]


async def forward(outbox: Outbox, event: Any, call: int) -> None:
    await outbox.send(t.OWNERSHIPS_BY_SKU, b"SKU-1", event.message.value)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "backoff", lambda attempt: 0.0)
    monkeypatch.setattr(outbox_module, "backoff", lambda attempt: 0.0)


# -- which failures are retried ------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.NotLeaderForPartitionError(),
        kafka_errors.RequestTimedOutError(),
        kafka_errors.KafkaConnectionError(),
        kafka_errors.TopicAuthorizationFailedError(),
        wrapped(kafka_errors.KafkaTimeoutError()),
        ConnectionResetError(),
        TimeoutError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_kafka_and_network_failures_are_transient(exc: Exception) -> None:
    assert is_transient(exc)


def test_every_error_aiokafka_calls_retriable_is_transient() -> None:
    retriable = [
        cls
        for cls in vars(kafka_errors).values()
        if inspect.isclass(cls) and issubclass(cls, kafka_errors.KafkaError) and cls.retriable
    ]
    assert len(retriable) > 10
    assert [cls.__name__ for cls in retriable if not is_transient(cls())] == []


@pytest.mark.parametrize(
    "exc",
    [
        DecodeError("invalid OwnershipRecorded: sku: Field required"),
        KeyMismatchError("record key b'x' must equal its customer_id b'C1'"),
        UnknownCustomerError("customer C1 is not in the directory"),
        UnsupportedChangeError("CustomerUpserted does not belong on the changes topic"),
        kafka_errors.MessageSizeTooLargeError(),
        wrapped(kafka_errors.RecordTooLargeError()),
        KeyError("bug"),
        ValueError("bug"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_failures_about_the_record_are_not_transient(exc: Exception) -> None:
    assert not is_transient(exc)


def test_backoff_doubles_from_a_tenth_of_a_second_to_five_seconds() -> None:
    assert [backoff(n) for n in range(1, 10)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    )
    assert backoff(10_000) == 5.0


# -- transient failures: the same record again, never a dead letter ------------------------


async def test_a_write_that_times_out_is_sent_again_until_kafka_takes_it() -> None:
    stage_ = Harness(forward)
    stage_.producer.fail[OUTPUT] = [kafka_errors.KafkaTimeoutError() for _ in range(2)]

    await stage_.run(record(0, b"first"), record(1, b"second"))

    assert stage_.producer.on(OUTPUT) == [(b"SKU-1", b"first"), (b"SKU-1", b"second")]
    assert stage_.calls == {0: 1, 1: 1}  # re-sent in place: the handler ran once
    assert stage_.letters() == []


async def test_a_write_refused_for_good_when_sent_again_is_the_records_fault_not_the_loops() -> (
    None
):
    """Kafka timed the write out, then refused the second send of it for good: that record
    is dead-lettered and the loop goes on (raised, it would end the stage)."""

    async def refused_the_second_time(outbox: Outbox, event: Any, call: int) -> None:
        await forward(outbox, event, call)
        if event.message.offset == 0 and call == 1:
            stage_.producer.refuse[OUTPUT] = [kafka_errors.MessageSizeTooLargeError()]

    stage_ = Harness(refused_the_second_time)
    stage_.producer.fail[OUTPUT] = [kafka_errors.KafkaTimeoutError()]

    await stage_.run(record(0, b"first"), record(1, b"second"))

    assert [letter.offset for letter in stage_.letters()] == [0]
    assert stage_.producer.on(OUTPUT) == [(b"SKU-1", b"second")]


async def test_a_send_refused_while_the_leader_moves_is_sent_again() -> None:
    stage_ = Harness(forward)
    stage_.producer.refuse[OUTPUT] = [
        wrapped(kafka_errors.NotLeaderForPartitionError()) for _ in range(3)
    ]

    await stage_.run(record(0, b"only"))

    assert stage_.producer.on(OUTPUT) == [(b"SKU-1", b"only")]
    assert stage_.calls == {0: 1}
    assert stage_.letters() == []


async def test_a_transient_failure_in_the_handler_handles_the_same_record_again() -> None:
    async def flaky(outbox: Outbox, event: Any, call: int) -> None:
        if call <= 2:
            raise kafka_errors.RequestTimedOutError()
        await forward(outbox, event, call)

    stage_ = Harness(flaky)

    await stage_.run(record(0, b"first"), record(1, b"second"))

    assert stage_.history == [
        "handle 0",
        "handle 0",
        "handle 0",
        f"wrote {OUTPUT}",
        "handle 1",
        "handle 1",
        "handle 1",
        f"wrote {OUTPUT}",
    ]
    assert stage_.producer.on(OUTPUT) == [(b"SKU-1", b"first"), (b"SKU-1", b"second")]
    assert stage_.letters() == []


async def test_a_send_cancelled_under_the_stage_is_sent_again() -> None:
    stage_ = Harness(forward)
    stage_.producer.fail[OUTPUT] = [asyncio.CancelledError()]

    await stage_.run(record(0, b"only"))

    assert stage_.producer.on(OUTPUT) == [(b"SKU-1", b"only")]
    assert stage_.letters() == []


# -- failures about the record: a dead letter that always fits, then the next record -------


async def test_a_bad_record_is_dead_lettered_where_it_came_from_and_the_next_one_flows() -> None:
    async def picky(outbox: Outbox, event: Any, call: int) -> None:
        if event.message.value == b"bad":
            raise DecodeError("invalid OwnershipRecorded: sku: Field required")
        await forward(outbox, event, call)

    stage_ = Harness(picky)

    await stage_.run(record(7, b"bad", key=b"C7"), record(8, b"good"))

    [letter] = stage_.letters()
    assert (letter.topic, letter.partition, letter.offset) == (SOURCE, 0, 7)
    assert letter.error_type == "DecodeError"
    assert letter.reason == "invalid OwnershipRecorded: sku: Field required"
    assert base64.b64decode(letter.value) == b"bad"
    assert (letter.value_size, letter.value_truncated) == (3, False)
    assert stage_.producer.on(LETTERS)[0][0] == b"C7"  # the original key
    assert stage_.producer.on(OUTPUT) == [(b"SKU-1", b"good")]
    assert stage_.calls == {7: 1, 8: 1}


def test_a_record_near_the_size_limit_becomes_a_small_dead_letter() -> None:
    value = bytes(range(256)) * 3902 + b"x" * 125  # 999,037 bytes, as in the incident
    key = b"K" * 10_000
    event = record(41, value, key=key)

    reason = "\x01" * 50_000  # each escaped as \u0001 in JSON: the longest a reason gets
    letter = dead_letter_for(event, "directory-ownerships", ValueError(reason))
    size = len(encode(letter))

    assert len(value) == 999_037
    assert size < 120_000
    assert (letter.value_size, letter.value_truncated) == (999_037, True)
    assert base64.b64decode(letter.value) == value[: 64 * 1024]
    assert (letter.key_size, letter.key_truncated) == (10_000, True)
    assert key.startswith(base64.b64decode(letter.key or ""))
    assert len(letter.reason) <= 4000
    assert (letter.topic, letter.partition, letter.offset) == (SOURCE, 0, 41)
    assert decode(DeadLetter, encode(letter)) == letter


def test_a_dead_letter_written_before_the_size_fields_still_reads() -> None:
    old = (
        b'{"type": "DeadLetter", "stage": "notify", "reason": "r", "topic": "p.impacts",'
        b' "partition": 1, "offset": 9, "value": "e30=", "failed_at": "2026-01-01T00:00:00Z",'
        b' "error_type": "DecodeError"}'
    )

    letter = decode(DeadLetter, old)

    assert (letter.value_size, letter.value_truncated, letter.key) == (None, False, None)


async def test_a_dead_letter_with_an_oversized_key_is_written_without_one() -> None:
    async def refuse(outbox: Outbox, event: Any, call: int) -> None:
        raise KeyMismatchError("wrong key")

    stage_ = Harness(refuse)

    await stage_.run(record(0, b"v", key=b"K" * 10_000))

    assert [key for key, _ in stage_.producer.on(LETTERS)] == [None]
    assert stage_.letters()[0].key_size == 10_000


async def test_the_loop_waits_for_the_dead_letter_before_taking_the_next_record() -> None:
    async def picky(outbox: Outbox, event: Any, call: int) -> None:
        if event.message.offset == 0:
            raise UnknownCustomerError("customer C1 is not in the directory")
        await forward(outbox, event, call)

    stage_ = Harness(picky)
    stage_.producer.fail[LETTERS] = [kafka_errors.MessageSizeTooLargeError()]
    stage_.producer.refuse[LETTERS] = [ValueError("producer bug")]

    await stage_.run(record(0), record(1))

    assert stage_.history == [
        "handle 0",
        f"refused {LETTERS}",
        f"failed {LETTERS}",
        f"wrote {LETTERS}",
        "handle 1",
        f"wrote {OUTPUT}",
    ]
    assert [letter.offset for letter in stage_.letters()] == [0]


async def test_a_write_still_in_flight_when_the_handler_fails_does_not_leak_into_the_next() -> None:
    async def half_done(outbox: Outbox, event: Any, call: int) -> None:
        await forward(outbox, event, call)
        if event.message.offset == 0:
            raise DecodeError("invalid after the first write")

    stage_ = Harness(half_done)
    stage_.producer.slow[OUTPUT] = 0.05
    stage_.producer.fail[OUTPUT] = [kafka_errors.RecordTooLargeError()]

    await stage_.run(record(0, b"first"), record(1, b"second"))

    assert [letter.offset for letter in stage_.letters()] == [0]
    assert stage_.letters()[0].error_type == "DecodeError"
    assert stage_.producer.on(OUTPUT) == [(b"SKU-1", b"second")]


async def test_a_failed_flush_has_let_every_other_write_settle() -> None:
    history: list[str] = []
    producer = FakeProducer(history)
    outbox = Outbox(
        Pipeline(settings=Settings(topic_prefix="t."), app=SimpleNamespace(producer=producer))
    )
    producer.fail[OUTPUT] = [kafka_errors.MessageSizeTooLargeError()]
    producer.slow["t.impacts"] = 0.05
    await outbox.send(t.OWNERSHIPS_BY_SKU, b"a", b"too big")
    await outbox.send(t.IMPACTS, b"b", b"slow but fine")

    failed = await outbox.flush()

    [(_, exc)] = failed.values()
    assert isinstance(exc, kafka_errors.MessageSizeTooLargeError)

    assert all(future.done() for future in producer.futures)
    await outbox.send(t.OWNERSHIPS_BY_SKU, b"c", b"next record")
    await outbox.flush()
    assert producer.on(OUTPUT) == [(b"c", b"next record")]


async def test_stopping_the_worker_cancels_a_stage_stuck_on_its_dead_letter() -> None:
    async def refuse(outbox: Outbox, event: Any, call: int) -> None:
        raise DecodeError("bad")

    stage_ = Harness(refuse)
    stage_.producer.refuse[LETTERS] = [ValueError("no") for _ in range(1000)]
    running = asyncio.ensure_future(stage_.loop.run(stream(record(0), record(1))))
    for _ in range(100):
        await asyncio.sleep(0)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert "handle 1" not in stage_.history
    assert stage_.letters() == []


# -- what Faust may commit ------------------------------------------------------------------


async def test_a_record_is_released_for_commit_once_it_is_done() -> None:
    stage_ = Harness(forward)
    first, second = record(0), record(1)

    await stage_.run(first, second)

    assert (first.acks, first.message.refcount) == (1, 1)  # the stream's own ack ends it
    assert first.ack() is True


async def test_a_record_interrupted_by_a_stop_is_never_released_for_commit() -> None:
    sending = asyncio.Event()

    async def hang(outbox: Outbox, event: Any, call: int) -> None:
        sending.set()
        await asyncio.Event().wait()  # an SMTP send still waiting when the worker stops

    stage_ = Harness(hang)
    interrupted = record(0)
    running = asyncio.ensure_future(stage_.loop.run(stream(interrupted)))
    await sending.wait()

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert interrupted.acks == 0
    assert interrupted.ack() is False  # Faust's ack on teardown leaves it uncommitted
