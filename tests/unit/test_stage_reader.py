"""A stage read by its own consumer keeps the stage loop's promises: records handled in
order, committed only once released, never past one given back, and the records held
at a revoke or a stop finished before Faust goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.app.base import App
from faust.streams import current_event
from faust.types import TP

from preaviso.agents import hold, reader
from preaviso.settings import Settings
from preaviso.streams import faust_fixes, group
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from tests.unit.stage_fakes import faust_consumer, recovery_after

SETTINGS = Settings(topic_prefix="t.", partitions=2)
TOPIC = SETTINGS.topic(t.NOTICES.name)
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class FakeConsumer:
    """aiokafka's consumer over a fixed log per partition; ``breaks`` fails a fetch once."""

    logs: dict[TopicPartition, list[bytes]] = {}
    breaks: list[int] = []  # fail the fetch once this many records were fetched in all
    sought: list[dict[TopicPartition, int]] = []

    def __init__(self, **_: Any) -> None:
        self.positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        FakeConsumer.sought.append(self.positions)

    async def stop(self) -> None:
        return None

    def assign(self, tps: list[TopicPartition]) -> None:
        assert set(tps) <= set(self.logs)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        fetched = sum(self.positions.values())
        if self.breaks and fetched >= self.breaks[0]:
            self.breaks.pop(0)
            raise ConnectionError("broker gone")
        got: dict[TopicPartition, list[Any]] = {}
        for tp, log in self.logs.items():
            start = self.positions.get(tp, len(log))
            batch = log[start : start + 2]  # two at a time: fetches end mid-partition
            if batch:
                got[tp] = [_record(tp, start + i, v) for i, v in enumerate(batch)]
                self.positions[tp] = start + len(batch)
        if not got:
            await asyncio.sleep(timeout_ms / 1000)
        return got


def _record(tp: TopicPartition, offset: int, value: bytes) -> Any:
    return SimpleNamespace(
        topic=tp.topic, partition=tp.partition, offset=offset, key=b"C1", value=value
    )


Work = Callable[[Any], Awaitable[None] | None]


class Rig:
    """A reader on a fake Faust app: what it handled, and what it committed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, committed: dict[TopicPartition, int]):
        monkeypatch.setattr(group, "AIOKafkaConsumer", FakeConsumer)
        monkeypatch.setattr(reader, "COMMIT_INTERVAL", 0.01)
        monkeypatch.setattr(reader, "backoff", lambda attempt: 0.01)
        self.handled: list[tuple[int, int]] = []
        self.claimed: list[tuple[int, int, bool]] = []
        self.commits: list[dict[TP, int]] = []
        self.assignment = {TP(TOPIC, 0), TP(TOPIC, 1)}
        self.work: Work = lambda event: None

        async def commit(offsets: dict[TP, int]) -> bool:
            self.commits.append(dict(offsets))
            committed.update((TopicPartition(*tp), o) for tp, o in offsets.items())
            return True

        self.crashed: list[BaseException] = []

        async def crash(exc: BaseException) -> None:
            self.crashed.append(exc)

        app = SimpleNamespace(
            topics=set(),
            consumer=faust_consumer(lambda: self.assignment, commit, committed),
            producer=SimpleNamespace(),
            crash=crash,
        )
        pipe = Pipeline(settings=SETTINGS, app=app, tables={}, topics={t.NOTICES.name: TOPIC})

        def on_event(outbox: Any) -> Any:
            async def handle(event: Any) -> Any:
                partition, offset = event.message.partition, event.message.offset
                self.handled.append((partition, offset))
                claimed = outbox.claim(f"notice-{partition}-{offset}", event=event)
                self.claimed.append((partition, offset, claimed))  # deliver skips if not
                return self.work(event)

            return handle

        self.reader = reader.read_stage(pipe, t.NOTICES, "deliver", on_event)

    def committed(self, tp: TopicPartition) -> int | None:
        found = [c[TP(tp.topic, tp.partition)] for c in self.commits if TP(*tp) in c]
        return found[-1] if found else None

    async def stop(self, drain: float = reader.DRAIN_MAX) -> None:
        """A revoke or a stop: no more records, and the held ones finished (or given up)."""
        self.reader.halt()
        await self.reader.drained(drain)

    async def until(self, check: Callable[[], bool], seconds: float = 3.0) -> None:
        async with asyncio.timeout(seconds):
            while not check():
                await asyncio.sleep(0.005)


@pytest.fixture
def logs() -> dict[TopicPartition, list[bytes]]:
    FakeConsumer.logs = {TP0: [b"a0", b"a1", b"a2", b"a3", b"a4"], TP1: [b"b0", b"b1", b"b2"]}
    FakeConsumer.breaks = []
    FakeConsumer.sought = []
    return FakeConsumer.logs


async def test_records_are_handled_in_order_and_committed_once_released(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})
    rig.reader.start({TP0, TP1})

    await rig.until(lambda: rig.committed(TP0) == 5 and rig.committed(TP1) == 3)

    assert [o for p, o in rig.handled if p == 0] == [0, 1, 2, 3, 4]
    assert [o for p, o in rig.handled if p == 1] == [0, 1, 2]
    await rig.stop()


async def test_a_record_is_fausts_current_event_in_its_handler_and_its_work_beside(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})
    seen: list[bool] = []

    async def beside(event: Any) -> None:
        await asyncio.sleep(0)
        seen.append(current_event() is event)

    def work(event: Any) -> Awaitable[None]:
        seen.append(current_event() is event)  # Faust's stores read this record's partition
        return beside(event)

    rig.work = work
    rig.reader.start({TP0, TP1})
    await rig.until(lambda: len(seen) == 16)

    assert all(seen)
    await rig.stop()


async def test_reading_starts_at_the_groups_committed_offsets(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={TP0: 3})
    rig.reader.start({TP0, TP1})

    await rig.until(lambda: rig.committed(TP0) == 5 and rig.committed(TP1) == 3)

    assert [o for p, o in rig.handled if p == 0] == [3, 4]
    await rig.stop()


async def test_a_record_given_back_and_every_later_one_of_its_partition_stay_uncommitted(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})

    def give_back_a2(event: Any) -> None:
        if (event.message.partition, event.message.offset) == (0, 2):
            hold.give_back(event)

    rig.work = give_back_a2
    rig.reader.start({TP0, TP1})

    await rig.until(lambda: len(rig.handled) == 8 and rig.committed(TP1) == 3)
    await asyncio.sleep(0.1)  # commits go on: none passes the record given back

    assert rig.committed(TP0) == 2
    await rig.stop()


async def test_a_halt_lets_the_records_in_flight_finish_before_drained_returns(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})
    gate = asyncio.Event()
    finished: list[int] = []

    async def send(offset: int) -> None:
        await gate.wait()
        finished.append(offset)

    rig.work = lambda event: send(event.message.offset) if event.message.partition == 0 else None
    rig.reader.start({TP0})
    await rig.until(lambda: len(rig.handled) == 5)

    rig.reader.halt()
    draining = asyncio.ensure_future(rig.reader.drained())
    await asyncio.sleep(0.05)
    assert not draining.done()  # waits for the sends in flight, as Faust for its streams
    gate.set()
    await draining

    assert finished == [0, 1, 2, 3, 4]  # none cancelled
    handled = len(rig.handled)
    await asyncio.sleep(0.05)
    assert len(rig.handled) == handled  # halted: no record taken after it


async def test_drained_gives_up_after_its_time_and_the_held_record_is_not_committed(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    rig.work = lambda event: hangs() if event.message.offset == 1 else None
    rig.reader.start({TP0})
    await rig.until(lambda: len(rig.handled) == 5 and rig.committed(TP0) == 1)

    await rig.stop(drain=0.1)

    await rig.until(cancelled.is_set)
    assert rig.committed(TP0) == 1


async def test_a_failed_consumer_is_replaced_from_the_first_record_not_taken(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    FakeConsumer.breaks = [4]
    rig = Rig(monkeypatch, committed={})
    rig.reader.start({TP0, TP1})

    await rig.until(lambda: rig.committed(TP0) == 5 and rig.committed(TP1) == 3)

    assert sorted(rig.handled) == sorted(set(rig.handled))  # none handled twice
    assert len(FakeConsumer.sought) == 2
    await rig.stop()


async def test_commits_stop_once_the_partitions_are_no_longer_assigned(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})
    gate = asyncio.Event()

    async def waits() -> None:
        await gate.wait()

    rig.work = lambda event: waits() if event.message.offset == 3 else None
    rig.reader.start({TP0})
    await rig.until(lambda: rig.committed(TP0) == 3)
    rig.assignment = set()  # Faust's group moved on: its commit would drop them

    gate.set()
    await rig.reader.drained()

    assert rig.committed(TP0) == 3


async def test_a_revoke_and_a_stop_wait_for_the_readers_before_faust_waits_for_its_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[str] = []

    async def faust_waits(app: Any, consumer: Any, logger: Any) -> None:
        log.append("faust waits for its streams")

    monkeypatch.setitem(faust_fixes._ORIGINAL, (App, "_consumer_wait_empty"), faust_waits)

    class Reader:
        def halt(self) -> None:
            log.append("halt")

        async def drained(self) -> None:
            await asyncio.sleep(0.01)
            log.append("drained")

        async def commit(self) -> None:
            log.append("commits what it released")

    app = SimpleNamespace(preaviso_readers=[Reader()])

    await faust_fixes.wait_for_readers(app, None, None)

    assert log == ["halt", "drained", "commits what it released", "faust waits for its streams"]


class Loader:
    def __init__(self, name: str, topic: str, log: list[str]) -> None:
        self.name, self.topics, self.log = name, frozenset({topic}), log

    def start(self, assigned: set[Any]) -> None:
        self.log.append(f"{self.name} starts on {sorted(tp.partition for tp in assigned)}")


async def test_faust_never_fetches_a_readers_partitions_and_each_reader_gets_its_own() -> None:
    log: list[str] = []
    assigned = {TP("t.customers", 0), TP(TOPIC, 0), TP(TOPIC, 1), TP("t.notices-retry", 1)}
    resumed: set[Any] = set()

    recovery = recovery_after(
        assigned,
        resumed,
        log,
        preaviso_bulk=Loader("bulk", "t.customers", log),
        preaviso_readers=[Loader("deliver", TOPIC, log)],
    )

    await faust_fixes._seek_then_resume(recovery)

    assert resumed == {TP("t.notices-retry", 1)}  # deliver-retry stays on Faust's streams
    assert log == ["resume_flow", "bulk starts on [0]", "deliver starts on [0, 1]"]


async def test_the_records_finished_while_draining_are_committed_before_faust_goes_on(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    monkeypatch.setitem(faust_fixes._ORIGINAL, (App, "_consumer_wait_empty"), _nothing)
    monkeypatch.setattr(reader, "COMMIT_INTERVAL", 3600)  # only the drain's commit
    rig = Rig(monkeypatch, committed={})
    gate = asyncio.Event()

    async def sends() -> None:
        await gate.wait()

    rig.work = lambda event: sends()
    rig.reader.start({TP0, TP1})
    await rig.until(lambda: len(rig.handled) == 8)
    app = SimpleNamespace(preaviso_readers=[rig.reader])

    waiting = asyncio.ensure_future(faust_fixes.wait_for_readers(app, None, None))
    await asyncio.sleep(0.05)
    gate.set()
    await waiting

    assert rig.commits == [{TP(TOPIC, 0): 5, TP(TOPIC, 1): 3}]


async def test_a_run_cut_short_leaves_no_claim_so_the_next_run_handles_the_record_again(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})
    rig.work = lambda event: asyncio.sleep(3600) if event.message.offset == 1 else None
    rig.reader.start({TP0})
    await rig.until(lambda: len(rig.handled) == 5 and rig.committed(TP0) == 1)
    await rig.stop(drain=0.05)  # the SMTP server stalls past the drain: given up on

    rig.work = lambda event: None
    rig.reader.assigned()  # the same partition again after the rebalance
    rig.reader.start({TP0})
    await rig.until(lambda: rig.committed(TP0) == 5)

    assert rig.claimed[5:] == [(0, 1, True), (0, 2, True), (0, 3, True), (0, 4, True)]
    await rig.stop()


async def test_a_recovery_overtaken_by_another_rebalance_starts_no_reader() -> None:
    log: list[str] = []
    recovery = recovery_after(
        {TP(TOPIC, 0)}, set(), log, preaviso_readers=[Loader("deliver", TOPIC, log)]
    )
    recovery.app.consumer_generation_id = 7

    async def rebalanced_meanwhile() -> None:
        recovery.app.consumer_generation_id = 8

    recovery.app._fetcher = SimpleNamespace(maybe_start=rebalanced_meanwhile)

    await faust_fixes._seek_then_resume(recovery)

    assert log == ["resume_flow"]  # the newer assignment's recovery starts it


async def test_a_reader_that_fails_crashes_the_worker_rather_than_stop_delivering_quietly(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(reader, "StageLoop", broken)
    rig.reader.start({TP0})

    await rig.until(lambda: bool(rig.crashed))
    assert str(rig.crashed[0]) == "a bug in the loop"


async def _nothing(*_: Any) -> None:
    return None
