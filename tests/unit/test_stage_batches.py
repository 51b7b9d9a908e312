"""Stages batch their writes, and Faust may commit a record only once it is done and written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import errors as kafka_errors

from preaviso.agents import outbox as outbox_module
from preaviso.agents import stage
from preaviso.agents.stage import Beside, Outbox, StageLoop
from preaviso.schemas.records import DeadLetter
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import DecodeError, decode
from tests.unit.stage_fakes import ACKED, LETTERS, OUTPUT, FakeProducer, record

Handler = Callable[[Outbox, Any], Awaitable[Beside | None]]


class Feed:
    """A stream that, like Faust's, never ends: records arrive when put, ``waiting`` counts them."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, *events: Any) -> None:
        for event in events:
            self.queue.put_nowait(event)

    def waiting(self) -> int:
        return self.queue.qsize()

    async def events(self) -> AsyncIterator[Any]:
        while True:
            event = await self.queue.get()
            try:
                yield event
            finally:
                event.ack()  # as Faust's stream does when the agent moves on


class Stage:
    """A stage loop over fake Kafka, fed record by record, with the writes and acks it made."""

    def __init__(self, handler: Handler, **options: Any) -> None:
        self.history: list[str] = []
        self.producer = FakeProducer(self.history)
        pipe = Pipeline(settings=Settings(topic_prefix="t."), app=SimpleNamespace(producer=self))
        self.outbox = Outbox(pipe, "test-stage")
        self.feed = Feed()
        self.sends = 0

        async def handle(event: Any) -> Beside | None:
            return await handler(self.outbox, event)

        self.loop = StageLoop("test-stage", self.outbox, handle, **options)
        self.task: asyncio.Task[None] | None = None

    async def send(self, *args: Any) -> Any:
        self.sends += 1
        return await self.producer.send(*args)

    def start(self) -> Stage:
        self.task = asyncio.ensure_future(self.loop.run(self.feed.events(), self.feed.waiting))
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    async def until(self, done: Callable[[], bool], timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.001)


@pytest.fixture(autouse=True)
def fresh_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    ACKED.clear()
    monkeypatch.setattr(stage, "backoff", lambda attempt: 0.0)
    monkeypatch.setattr(outbox_module, "backoff", lambda attempt: 0.0)


async def forward(outbox: Outbox, event: Any) -> None:
    await outbox.send(t.OWNERSHIPS_BY_SKU, b"SKU-1", event.message.value)


def offsets(events: list[Any]) -> list[tuple[int, int]]:
    return [(e.message.partition, e.message.offset) for e in events]


async def test_records_that_arrive_together_are_written_before_any_is_released() -> None:
    stage_ = Stage(forward)
    stage_.producer.slow[OUTPUT] = 0.02
    burst = [record(n, f"v{n}".encode()) for n in range(7)]
    stage_.feed.put(*burst)

    stage_.start()
    await stage_.until(lambda: len(ACKED) == 7)
    await stage_.stop()

    assert stage_.producer.on(OUTPUT) == [(b"SKU-1", f"v{n}".encode()) for n in range(7)]
    # one flush for the burst: every write settled before the first release
    assert stage_.history == [f"wrote {OUTPUT}"] * 7
    assert offsets(burst) == ACKED


async def test_a_burst_that_ends_on_an_odd_count_is_not_stranded() -> None:
    stage_ = Stage(forward, batch_max=4)
    stage_.start()

    stage_.feed.put(*(record(n) for n in range(11)))
    await stage_.until(lambda: len(ACKED) == 11)

    assert stage_.loop.held == 0
    assert len(stage_.producer.on(OUTPUT)) == 11
    await stage_.stop()


async def test_held_records_are_released_even_if_the_next_one_never_comes() -> None:
    stage_ = Stage(forward, linger=0.01)
    stage_.feed.waiting = lambda: 1  # says more is coming, but nothing does
    stage_.start()

    stage_.feed.put(record(0), record(1), record(2))
    await stage_.until(lambda: len(ACKED) == 3, timeout=1.0)

    assert stage_.loop.held == 0
    await stage_.stop()


async def test_a_batch_is_flushed_when_it_is_full() -> None:
    stage_ = Stage(forward, batch_max=3)
    stage_.feed.waiting = lambda: 1  # always more waiting: only the bound ends a batch
    stage_.start()

    stage_.feed.put(*(record(n) for n in range(3)))
    await stage_.until(lambda: len(ACKED) == 3, timeout=0.5)
    await stage_.stop()

    assert len(stage_.producer.on(OUTPUT)) == 3


async def test_the_same_notice_twice_in_one_batch_is_issued_once() -> None:
    async def issue_once(outbox: Outbox, event: Any) -> None:
        if outbox.claim("notice-1"):
            await forward(outbox, event)

    stage_ = Stage(issue_once)
    stage_.feed.put(record(0), record(1))
    stage_.start()
    await stage_.until(lambda: len(ACKED) == 2)

    stage_.feed.put(record(2))  # the claim ended with the first batch's flush
    await stage_.until(lambda: len(ACKED) == 3)
    await stage_.stop()

    assert len(stage_.producer.on(OUTPUT)) == 2


async def test_a_record_kafka_refuses_for_good_is_dead_lettered_and_the_others_released() -> None:
    stage_ = Stage(forward)
    stage_.producer.fail[OUTPUT] = [None, kafka_errors.RecordTooLargeError()]  # type: ignore[list-item]
    stage_.feed.put(*(record(n, value=b"%d" % n) for n in range(3)))
    stage_.start()
    await stage_.until(lambda: len(ACKED) == 3)
    await stage_.stop()

    letters = [decode(DeadLetter, v) for _, v in stage_.producer.on(LETTERS)]
    assert [letter.offset for letter in letters] == [1]
    assert [value for _, value in stage_.producer.on(OUTPUT)] == [b"0", b"2"]  # not 1's
    assert ACKED == [(0, 0), (0, 1), (0, 2)]


# -- work beside the loop (deliver's sends) -----------------------------------------------


def beside(delays: dict[int, float], done: list[int]) -> Handler:
    async def handle(outbox: Outbox, event: Any) -> Beside:
        async def send() -> None:
            await asyncio.sleep(delays.get(event.message.offset, 0.0))
            await outbox.send(t.RECEIPTS, None, b"receipt", event=event)
            done.append(event.message.offset)

        return send()

    return handle


async def test_a_slow_record_does_not_hold_the_others_but_is_committed_first() -> None:
    done: list[int] = []
    stage_ = Stage(beside({0: 0.2}, done))
    stage_.feed.put(*(record(n) for n in range(5)))
    stage_.start()

    await stage_.until(lambda: len(done) == 4)
    assert done == [1, 2, 3, 4]
    assert ACKED == []  # offset 0 is not done: nothing after it may be committed

    await stage_.until(lambda: len(ACKED) == 5)
    assert [(0, n) for n in range(5)] == ACKED
    await stage_.stop()


async def test_records_of_another_partition_are_not_held_by_a_slow_one() -> None:
    done: list[int] = []
    stage_ = Stage(beside({0: 0.3}, done))
    stage_.feed.put(record(0, partition=0), record(10, partition=1), record(11, partition=1))
    stage_.start()

    await stage_.until(lambda: len(ACKED) == 2)
    assert ACKED == [(1, 10), (1, 11)]
    await stage_.until(lambda: len(ACKED) == 3)
    await stage_.stop()


async def test_after_a_record_is_let_go_the_later_ones_of_its_partition_are_let_go_too() -> None:
    async def let_go_first(outbox: Outbox, event: Any) -> Beside:
        async def send() -> None:
            if event.message.offset == 0:
                await asyncio.sleep(0.05)
                event.message.acked = True  # hold.let_go: the worker stops or rebalances
            else:
                await outbox.send(t.RECEIPTS, None, b"receipt", event=event)

        return send()

    stage_ = Stage(let_go_first)
    burst = [record(n) for n in range(4)]
    stage_.feed.put(*burst)
    stage_.start()
    await stage_.until(lambda: all(e.message.refcount == 0 for e in burst))
    await stage_.stop()

    assert ACKED == []  # none of them may be committed: the first is not done
    assert all(e.message.acked for e in burst)  # given back: read again after the rebalance


async def test_a_record_read_again_after_a_let_go_is_committed_as_usual() -> None:
    async def let_go_once(outbox: Outbox, event: Any) -> Beside:
        async def send() -> None:
            if event.message.offset == 0 and event.message.value == b"first":
                event.message.acked = True
            else:
                await outbox.send(t.RECEIPTS, None, b"receipt", event=event)

        return send()

    stage_ = Stage(let_go_once)
    stage_.feed.put(record(0, b"first"), record(1))
    stage_.start()
    await stage_.until(lambda: stage_.loop.held == 0)

    stage_.feed.put(record(0, b"again"), record(1))  # the new owner's seek, here ourselves
    await stage_.until(lambda: len(ACKED) == 2)
    await stage_.stop()

    assert ACKED == [(0, 0), (0, 1)]


async def test_work_beside_that_fails_is_done_again_alone() -> None:
    calls: dict[int, int] = {}

    async def flaky(outbox: Outbox, event: Any) -> Beside:
        offset = event.message.offset
        calls[offset] = calls.get(offset, 0) + 1

        async def send() -> None:
            if offset == 1 and calls[offset] == 1:
                raise kafka_errors.KafkaTimeoutError()
            await outbox.send(t.RECEIPTS, None, f"r{offset}".encode(), event=event)

        return send()

    stage_ = Stage(flaky)
    stage_.feed.put(record(0), record(1), record(2))
    stage_.start()
    await stage_.until(lambda: len(ACKED) == 3)
    await stage_.stop()

    assert calls == {0: 1, 1: 2, 2: 1}
    assert sorted(v for _, v in stage_.producer.on("t.receipts")) == [b"r0", b"r1", b"r2"]
    assert stage_.producer.on(LETTERS) == []


async def test_work_beside_cancelled_from_within_is_dead_lettered_not_released_as_done() -> None:
    async def cut_off(outbox: Outbox, event: Any) -> Beside:
        async def send() -> None:
            gone = asyncio.get_running_loop().create_future()
            gone.cancel()  # something it waited for was cancelled: a bug, not a stop
            await gone

        return send()

    stage_ = Stage(cut_off)
    stage_.feed.put(record(0))
    stage_.start()
    await stage_.until(lambda: len(ACKED) == 1)
    await stage_.stop()

    assert [decode(DeadLetter, v).offset for _, v in stage_.producer.on(LETTERS)] == [0]


async def test_the_loop_waits_when_too_many_records_are_held() -> None:
    gate = asyncio.Event()
    started: list[int] = []

    async def blocked(outbox: Outbox, event: Any) -> Beside:
        started.append(event.message.offset)

        async def send() -> None:
            await gate.wait()

        return send()

    stage_ = Stage(blocked, batch_max=2, held_max=4)
    stage_.feed.put(*(record(n) for n in range(10)))
    stage_.start()
    await stage_.until(lambda: len(started) == 4)
    await asyncio.sleep(0.05)

    assert len(started) == 4  # no more taken while four wait
    gate.set()
    await stage_.until(lambda: len(ACKED) == 10)
    await stage_.stop()


async def test_stopping_cancels_work_beside_and_releases_nothing_unfinished() -> None:
    gate = asyncio.Event()

    async def hang(outbox: Outbox, event: Any) -> Beside:
        return gate.wait()  # type: ignore[return-value]

    stage_ = Stage(hang)
    pending = record(0)
    stage_.feed.put(pending)
    stage_.start()
    await stage_.until(lambda: stage_.loop.held == 1)

    await stage_.stop()

    assert ACKED == []
    assert pending.message.refcount == 1  # ours: Faust's ack on teardown leaves it uncommitted


async def test_a_notice_given_back_unsent_is_sent_when_it_is_read_again() -> None:
    async def send_unless_stopping(outbox: Outbox, event: Any) -> Beside:
        async def send() -> None:
            if not outbox.claim("notice-1", event=event):
                return
            if event.message.value == b"during the stop":
                event.message.acked = True  # given back unsent
                return
            await outbox.send(t.RECEIPTS, None, b"sent", event=event)

        return send()

    stage_ = Stage(send_unless_stopping)
    first = record(0, b"during the stop")
    stage_.feed.put(first)
    stage_.start()
    await stage_.until(lambda: first.message.refcount == 0)

    stage_.feed.put(record(0, b"read again"))
    await stage_.until(lambda: len(ACKED) == 1)
    await stage_.stop()

    assert stage_.producer.on("t.receipts") == [(None, b"sent")]


async def test_a_refusal_found_while_another_record_is_dead_lettered_is_not_dropped() -> None:
    async def picky(outbox: Outbox, event: Any) -> None:
        if event.message.value == b"bad":
            raise DecodeError("invalid OwnershipRecorded: sku: Field required")
        await forward(outbox, event)

    stage_ = Stage(picky)
    stage_.producer.fail[OUTPUT] = [kafka_errors.RecordTooLargeError()]  # the first output
    stage_.feed.put(record(0, b"first"), record(1, b"bad"))
    stage_.start()
    await stage_.until(lambda: len(ACKED) == 2)
    await stage_.stop()

    # record 1's dead letter flushed record 0's refused output: record 0 is
    # dead-lettered too, not released as if its output had been written
    letters = {d.offset: d for d in (decode(DeadLetter, v) for _, v in stage_.producer.on(LETTERS))}
    assert sorted(letters) == [0, 1]
    assert letters[0].error_type == "RecordTooLargeError"
    assert stage_.producer.on(OUTPUT) == []
