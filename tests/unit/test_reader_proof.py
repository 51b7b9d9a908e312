"""deliver's reader proves the worker's membership to its fence: it commits again what the
group holds from it, and the group's answer says whether the partitions are still its."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from preaviso.streams import group
from tests.unit.test_stage_reader import TOPIC, TP0, TP1, Rig, logs

__all__ = ["logs"]  # the fixture


def holding(rig: Rig) -> asyncio.Future[None]:
    """Every record's work waits for the returned future: nothing is released meanwhile."""
    held: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        await held

    rig.work = lambda event: waits()
    return held


async def test_before_any_release_the_proof_commits_the_groups_own_offsets_again(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={TP0: 3})
    held = holding(rig)
    rig.reader.start({TP0, TP1})
    await rig.until(lambda: len(rig.handled) >= 1)

    assert await rig.reader.prove() is True
    assert rig.commits == [{TP(TOPIC, 0): 3, TP(TOPIC, 1): 0}]  # nothing moved, asked
    held.set_result(None)
    await rig.stop()


async def test_the_proof_commits_what_was_released_since(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})
    rig.reader.start({TP0, TP1})
    await rig.until(lambda: len(rig.handled) == 8)
    await rig.stop()

    rig.commits.clear()
    rig.reader.assigned()
    rig.reader.start({TP0, TP1})  # a new run, its records all committed: 5 and 3
    while (answer := await rig.reader.prove()) is None:  # its offsets not known yet
        await asyncio.sleep(0.005)
    assert answer is True
    assert rig.commits[-1] == {TP(TOPIC, 0): 5, TP(TOPIC, 1): 3}
    await rig.stop()


async def test_a_refused_proof_halts_the_reader(monkeypatch: pytest.MonkeyPatch, logs: Any) -> None:
    rig = Rig(monkeypatch, committed={})
    held = holding(rig)
    rig.reader.start({TP0, TP1})
    await rig.until(lambda: len(rig.handled) == 8)
    rig.assignment = set()  # the group gave the partitions to another worker

    assert await rig.reader.prove() is False
    logs[TP0].append(b"a5")  # published after: never taken
    held.set_result(None)
    await rig.reader.drained()
    await asyncio.sleep(0.05)

    assert len(rig.handled) == 8
    assert rig.commits == []
    assert await rig.reader.prove() is False  # halted: asked no more


async def test_a_reader_that_does_not_know_its_offsets_yet_has_nothing_to_prove_with(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})

    assert await rig.reader.prove() is None
    assert rig.commits == []


async def test_a_worker_whose_heartbeat_was_refused_proves_nothing(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    """aiokafka forgets its generation (-1) when the group no longer knows it; Kafka would
    take a commit without one when the group has emptied meanwhile, which is no proof."""
    rig = Rig(monkeypatch, committed={})
    held = holding(rig)
    rig.reader.start({TP0, TP1})
    await rig.until(lambda: len(rig.handled) == 8)
    thread = rig.reader._pipe.app.consumer._thread
    consumer = thread._ensure_consumer()
    forgotten = SimpleNamespace(committed=consumer.committed, _coordinator=SimpleNamespace(
        generation=-1, member_id=""))  # fmt: skip
    monkeypatch.setattr(thread, "_ensure_consumer", lambda: forgotten)

    assert await rig.reader.prove() is False
    assert rig.commits == []
    held.set_result(None)
    await rig.reader.drained()


async def test_a_proof_that_ends_after_a_new_start_leaves_the_new_run_alone(
    monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    rig = Rig(monkeypatch, committed={})
    rig.reader.start({TP0, TP1})
    await rig.until(lambda: len(rig.handled) == 8)
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    real = group.commit_assigned

    async def slow_commit(app: Any, offsets: Any) -> bool:
        if not answer.done():  # the proof's: answered only once the next run started
            return await answer
        return await real(app, offsets)

    monkeypatch.setattr(group, "commit_assigned", slow_commit)
    proving = asyncio.ensure_future(rig.reader.prove())
    await asyncio.sleep(0.01)
    await rig.stop()
    rig.reader.assigned()
    rig.reader.start({TP0})  # the next assignment's run, only partition 0 now
    answer.set_result(False)  # the old run's proof refused, late

    assert await proving is False
    await asyncio.sleep(0.3)  # a halted run ends within a fetch's wait (0.1 s)
    assert rig.reader._task is not None
    assert not rig.reader._task.done()  # the new run was not halted by the old refusal
    await rig.stop()
