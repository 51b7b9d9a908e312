"""The Faust fix: after table recovery, stream partitions are rewound while still paused.

A fake consumer stands in for Faust's: while ``perform_seek`` is awaited, its
fetcher keeps running, as Faust's does, and fetches from every partition that is
active at that moment. What it fetches before the seek is stale: the fix must
leave nothing of it to be processed, and resume the partitions only afterwards.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.consumer.subscription_state import Assignment
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from preaviso.settings import Settings
from preaviso.streams import faust_fixes
from preaviso.streams.app import create_app

STREAM = TP("x.impacts", 0)
CHANGELOG = TP("x.preaviso-issued-changelog", 0)


class FakeConsumer:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.active: set[tuple[str, int]] = {CHANGELOG}
        self.fetched_during_seek: set[tuple[str, int]] = set()

    def assignment(self) -> set[tuple[str, int]]:
        return {STREAM, CHANGELOG}

    def resume_partitions(self, tps: set[tuple[str, int]]) -> None:
        self.log.append("resume_partitions")
        self.active |= set(tps)

    async def perform_seek(self) -> None:
        self.log.append("perform_seek")
        for _ in range(3):  # the fetcher runs while the seek is awaited
            self.fetched_during_seek |= self.active & {STREAM}
            await asyncio.sleep(0)

    def resume_flow(self) -> None:
        self.log.append("resume_flow")


async def noop(*_: Any) -> None:
    return None


def fake_recovery(log: list[str]) -> Any:
    consumer = FakeConsumer(log)
    app = SimpleNamespace(
        consumer=consumer,
        consumer_generation_id=7,
        conf=SimpleNamespace(broker_request_timeout=5),
        on_rebalance_complete=SimpleNamespace(send=noop),
        flow_control=SimpleNamespace(resume=lambda: log.append("flow_control.resume")),
        _fetcher=SimpleNamespace(maybe_start=noop),
        assignor=SimpleNamespace(assigned_standbys=lambda: set()),
        on_rebalance_end=lambda: None,
    )

    async def wait(coro: Any, timeout: float | None = None) -> None:
        await coro

    tables = SimpleNamespace(
        values=lambda: [],
        on_actives_ready=lambda: None,
        on_standbys_ready=lambda: None,
    )
    return SimpleNamespace(
        app=app,
        tables=tables,
        log=SimpleNamespace(info=lambda *a: None, warning=lambda *a: None, dev=lambda *a: None),
        completed=asyncio.Event(),
        actives_for_table={},
        standbys_for_table={},
        _set_recovery_ended=lambda: None,
        _is_changelog_tp=lambda tp: tp == CHANGELOG,
        _wait=wait,
    )


async def test_after_recovery_the_fix_seeks_before_it_resumes_the_stream_partitions() -> None:
    log: list[str] = []
    recovery = fake_recovery(log)

    await faust_fixes.on_recovery_completed(recovery, generation_id=7)

    assert log == ["perform_seek", "flow_control.resume", "resume_partitions", "resume_flow"]
    assert recovery.app.consumer.fetched_during_seek == set()
    assert STREAM in recovery.app.consumer.active
    assert recovery.completed.is_set()


async def test_with_nothing_to_restore_the_fix_also_seeks_first() -> None:
    log: list[str] = []
    recovery = fake_recovery(log)

    await faust_fixes._resume_streams(recovery, generation_id=7)

    assert log == ["perform_seek", "flow_control.resume", "resume_partitions", "resume_flow"]
    assert recovery.app.consumer.fetched_during_seek == set()


async def test_faust_own_order_fetches_stream_records_during_the_seek() -> None:
    """The upstream bug, shown on faust-streaming as installed: when this fails, Faust
    has changed its order and the fix (and docs/faust-recovery-bug.md) can go."""
    log: list[str] = []
    recovery = fake_recovery(log)
    original = faust_fixes._ORIGINAL[Recovery, "on_recovery_completed"]

    await original(recovery, generation_id=7)

    assert log.index("resume_partitions") < log.index("perform_seek")
    assert log.index("perform_seek") < log.index("flow_control.resume")
    assert recovery.app.consumer.fetched_during_seek == {STREAM}


async def test_a_newer_generation_stops_the_fixed_recovery_before_it_resumes() -> None:
    log: list[str] = []
    recovery = fake_recovery(log)

    await faust_fixes.on_recovery_completed(recovery, generation_id=6)

    assert log == []
    assert not recovery.completed.is_set()


def test_every_app_the_project_builds_runs_with_the_fix(tmp_path: Any) -> None:
    faust_fixes.revert()
    assert not faust_fixes.applied()

    create_app(Settings(data_dir=tmp_path, store="memory://"), register_agents=False)

    assert faust_fixes.applied()
    assert Recovery.on_recovery_completed is faust_fixes.on_recovery_completed


class FakeFetcher:
    """aiokafka's ``fetched_records``: waits for data, then reads an empty set as 'all'."""

    def __init__(self, buffered: dict[tuple[str, int], list[int]]) -> None:
        self.buffered = buffered
        self.position = {tp: 0 for tp in buffered}

    async def fetched_records(self, partitions: Any, timeout: float) -> dict[Any, list[int]]:
        await asyncio.sleep(0)  # waits for new data; meanwhile Faust pauses partitions
        drained = {
            tp: offsets
            for tp, offsets in self.buffered.items()
            if not partitions or tp in partitions
        }
        for tp, offsets in drained.items():
            self.position[tp] = offsets[-1] + 1  # handed out: the position moves on
        return drained


async def test_a_fetch_returns_only_partitions_active_when_it_was_asked_for(
    monkeypatch: Any,
) -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    fetcher = FakeFetcher({STREAM: [0, 1, 2], CHANGELOG: [40, 41]})
    monkeypatch.setitem(
        faust_fixes._ORIGINAL,
        (AIOKafkaConsumerThread, "getmany"),
        lambda self, active, timeout: fetcher.fetched_records(active, timeout),
    )
    active = {CHANGELOG}
    thread = SimpleNamespace(consumer=SimpleNamespace(_buffered_partitions=set()))
    fetching = asyncio.ensure_future(faust_fixes.getmany(thread, active, 1.0))
    await asyncio.sleep(0)
    active.clear()  # recovery ends: the changelog partitions are paused

    records = await fetching

    assert set(records) == {CHANGELOG}
    assert fetcher.position[STREAM] == 0  # the paused stream partition was not consumed


async def test_faust_own_fetch_consumes_paused_partitions_when_the_set_empties() -> None:
    """The upstream bug on the model: the same race with the live set hands out the
    stream partition's records, which Faust then skips because it is paused."""
    fetcher = FakeFetcher({STREAM: [0, 1, 2], CHANGELOG: [40, 41]})
    active = {CHANGELOG}
    fetching = asyncio.ensure_future(fetcher.fetched_records(active, 1.0))
    await asyncio.sleep(0)
    active.clear()

    records = await fetching

    assert STREAM in records
    assert fetcher.position[STREAM] == 3


class FakeAIOKafkaConsumer:
    def __init__(self, committed: dict[tuple[str, int], int | None]) -> None:
        self.committed = committed
        self.sought: dict[tuple[str, int], int] = {}

    async def seek_to_committed(self) -> dict[tuple[str, int], int | None]:
        # aiokafka seeks only partitions whose committed offset is above 0
        self.sought = {tp: off for tp, off in self.committed.items() if off and off > 0}
        return dict(self.committed)

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        self.sought[tp] = offset


async def test_a_seek_rewinds_never_committed_stream_partitions_to_the_start() -> None:
    never, zero, five = ("x.notices", 0), ("x.notices", 1), ("x.notices", 2)
    kafka = FakeAIOKafkaConsumer({never: None, zero: 0, five: 5, CHANGELOG: None})

    async def call_thread(fun: Any) -> Any:
        return await fun()

    thread = SimpleNamespace(
        _ensure_consumer=lambda: kafka,
        consumer=SimpleNamespace(_is_changelog_tp=lambda tp: tp == CHANGELOG),
        call_thread=call_thread,
    )

    committed = await faust_fixes.seek_to_committed(thread)

    assert committed == {never: None, zero: 0, five: 5, CHANGELOG: None}
    # offset 0 is the beginning; one below the log start is reset to it by the fetch
    assert kafka.sought == {five: 5, never: 0, zero: 0}


async def test_records_of_a_partition_paused_during_the_fetch_are_put_back(
    monkeypatch: Any,
) -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    paused, active = ("x.notices", 2), ("x.notices", 3)
    fetched = {
        paused: [SimpleNamespace(offset=85), SimpleNamespace(offset=86)],
        active: [SimpleNamespace(offset=40)],
    }

    async def fetch_through_a_rebalance(*_: Any, **__: Any) -> dict[Any, Any]:
        return fetched  # asked for both; by the time it returns, one is paused

    monkeypatch.setitem(
        faust_fixes._ORIGINAL, (AIOKafkaConsumerThread, "_fetch_records"), fetch_through_a_rebalance
    )
    sought: list[tuple[Any, int]] = []
    kafka = SimpleNamespace(
        assignment=lambda: {paused, active}, seek=lambda tp, offset: sought.append((tp, offset))
    )
    thread = SimpleNamespace(
        consumer=SimpleNamespace(_active_partitions={active}, _buffered_partitions=set())
    )

    kept = await faust_fixes._fetch_records(thread, kafka, {paused, active}, timeout=1.0)

    assert kept == {active: fetched[active]}
    assert sought == [(paused, 85)]  # fetched again from there once it is resumed


def livelock_check_on(state_of: Any) -> Any:
    """What Faust's livelock check reads of its consumer thread, around one partition."""
    consumer = SimpleNamespace(
        _fetcher=SimpleNamespace(
            _subscriptions=SimpleNamespace(subscription=SimpleNamespace(assignment=state_of))
        ),
        app=SimpleNamespace(monitor=object(), topics=SimpleNamespace(acks_enabled_for=bool)),
    )
    return SimpleNamespace(
        _ensure_consumer=lambda: consumer,
        _verify_aiokafka_event_path=lambda now, tp: False,  # fetches were sent lately
        consumer=consumer,
        time_started=0.0,
    )


async def test_the_livelock_check_skips_a_partition_that_has_no_position_yet(
    monkeypatch: Any,
) -> None:
    """Right after a rebalance a partition can be fetched for before it has a position:
    Faust's check then read it and aiokafka's assertion crashed the worker."""
    notices = AioTopicPartition("x.notices", 0)
    assignment = Assignment({notices})
    state = assignment.state_value(notices)
    state.highwater, state.timestamp = 10, 1_000  # fetched, but never sought
    thread = livelock_check_on(assignment)
    faust_own = faust_fixes._ORIGINAL[AIOKafkaConsumerThread, "verify_event_path"]

    with pytest.raises(AssertionError):
        faust_own(thread, 5.0, TP("x.notices", 0))
    assert faust_fixes.verify_event_path(thread, 5.0, TP("x.notices", 0)) is None

    checked: list[Any] = []
    monkeypatch.setitem(
        faust_fixes._ORIGINAL,
        (AIOKafkaConsumerThread, "verify_event_path"),
        lambda self, now, tp: checked.append(tp),
    )
    state.seek(7)  # a position: Faust's check goes on as before
    faust_fixes.verify_event_path(thread, 5.0, TP("x.notices", 0))
    assert checked == [TP("x.notices", 0)]


async def test_the_worker_consumer_holds_a_fetch_the_fixed_wait_at_most(tmp_path: Any) -> None:
    app = create_app(Settings(data_dir=tmp_path, store="memory://"), register_agents=False).app

    thread = app.consumer._thread
    try:
        consumer = thread._create_worker_consumer(app.transport)
        faust_fixes.revert()
        try:
            fausts = thread._create_worker_consumer(app.transport)
        finally:
            faust_fixes.apply()
    finally:
        thread.thread_loop.close()  # the consumer thread's own loop, never started

    # aiokafka hands this attribute to its fetcher when the consumer starts.
    assert (consumer._fetch_max_wait_ms, fausts._fetch_max_wait_ms) == (100, 1500)
