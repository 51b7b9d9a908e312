"""Faust's fetch loop hands each record over inline when the hand-over need not wait.

``faust_fixes.wait_first`` replaces ``Service.wait_first`` for Faust's consumer. It
must behave as the original does (the hand-over completes, or is cancelled when the
flow is suspended first; errors surface), only without a task per record.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from mode import Service

from preaviso.streams import faust_fixes


class Loop(Service):
    """A bare mode service: what ``wait_first`` needs of Faust's consumer."""


def wait_first(*coros: Any) -> Any:
    return faust_fixes.wait_first(Loop(), *coros)


async def test_a_hand_over_that_does_not_wait_completes_inline_without_a_task() -> None:
    made: list[Any] = []
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()

    def counting(lp: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made.append(coro)
        return asyncio.Task(coro, loop=lp, **kw)

    loop.set_task_factory(counting)
    suspended = asyncio.Event()
    try:

        async def hand_over() -> str:
            return "queued"

        result = await wait_first(hand_over(), suspended.wait())
    finally:
        loop.set_task_factory(factory)

    assert result.results == ["queued"]
    assert not result.stopped
    assert made == []


async def test_the_wait_not_taken_is_closed_so_nothing_is_left_unawaited() -> None:
    async def hand_over() -> None:
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" fails the test
        await wait_first(hand_over(), asyncio.Event().wait())
        gc.collect()


async def test_a_hand_over_that_waits_goes_on_from_where_it_stopped() -> None:
    room = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def hand_over() -> str:
        steps.append("before")
        value = await room
        steps.append(f"after {value}")
        return "queued"

    waiting = asyncio.ensure_future(wait_first(hand_over(), asyncio.Event().wait()))
    await asyncio.sleep(0.01)
    assert steps == ["before"]
    assert not waiting.done()

    room.set_result("room")
    result = await waiting

    assert steps == ["before", "after room"]  # each step ran once, in order
    assert result.results == ["queued"]


async def test_a_waiting_hand_over_is_cancelled_when_the_flow_is_suspended_first() -> None:
    suspended = asyncio.Event()
    cleaned: list[str] = []

    async def hand_over() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # a queue that stays full
        finally:
            cleaned.append("cancelled")

    waiting = asyncio.ensure_future(wait_first(hand_over(), suspended.wait()))
    await asyncio.sleep(0.01)
    suspended.set()
    result = await waiting

    assert result.results == [True]  # the suspension won
    await asyncio.sleep(0)
    assert cleaned == ["cancelled"]


async def test_a_hand_over_that_waits_on_a_bare_yield_still_completes() -> None:
    async def hand_over() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "queued"

    result = await wait_first(hand_over(), asyncio.Event().wait())

    assert result.results == ["queued"]


@pytest.mark.parametrize("waits_first", [False, True])
async def test_an_error_in_the_hand_over_surfaces(waits_first: bool) -> None:
    async def hand_over() -> None:
        if waits_first:
            await asyncio.sleep(0)
        raise LookupError("decode failed")

    with pytest.raises(LookupError, match="decode failed"):
        await wait_first(hand_over(), asyncio.Event().wait())


def test_the_fix_is_installed_on_faust_consumer() -> None:
    faust_fixes.apply()
    assert Consumer.wait_first is faust_fixes.wait_first


async def test_while_a_partition_waits_for_room_a_fetch_waits_briefly(monkeypatch: Any) -> None:
    """Faust fetches with a 1 s timeout; a partition paused for a full queue and resumed
    meanwhile would wait out that second before it is fetched again."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    asked: list[float] = []

    async def fetch(self: Any, active: Any, timeout: float) -> dict[Any, Any]:
        asked.append(timeout)
        return {}

    monkeypatch.setitem(faust_fixes._ORIGINAL, (AIOKafkaConsumerThread, "getmany"), fetch)
    consumer = SimpleNamespace(_buffered_partitions=set())
    thread = SimpleNamespace(consumer=consumer)

    await faust_fixes.getmany(thread, {("t", 0)}, 1.0)
    consumer._buffered_partitions.add(("t", 1))
    await faust_fixes.getmany(thread, {("t", 0)}, 1.0)

    assert asked == [1.0, faust_fixes.BUFFERED_POLL]


async def test_with_every_partition_paused_for_room_the_fetcher_looks_again_soon() -> None:
    consumer = SimpleNamespace(
        flow_active=True,
        _buffered_partitions={("t", 0)},
        _get_active_partitions=lambda: set(),
    )
    started = asyncio.get_running_loop().time()

    records, active = await faust_fixes._wait_next_records(consumer, 1.0)

    assert (records, active) == ({}, set())
    assert asyncio.get_running_loop().time() - started < 0.5  # Faust sleeps 1 s here
