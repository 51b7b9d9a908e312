"""The bulk loader never outlives its partitions: whatever order a revoke, a stop and the
end of a recovery come in, a loader whose partitions moved writes and commits nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.app.base import App
from faust.tables.manager import TableManager
from faust.types import TP

from preaviso.agents import bulk
from preaviso.streams import faust_fixes
from tests.unit.stage_fakes import faust_consumer
from tests.unit.test_bulk_writes import FakeProducer

IMPACTS = "x.impacts"
ASSIGNED = {TP(IMPACTS, 0), TP(IMPACTS, 1)}


class Reading(bulk.BulkLoader):
    """The real loader, its reading of Kafka replaced by a note of what it would read."""

    def __init__(self, app: Any) -> None:
        super().__init__(SimpleNamespace(app=app, topic_name=str), {})  # type: ignore[arg-type]
        self.topics = frozenset({IMPACTS})
        self.reads: list[list[int]] = []

    async def _run(self, tps: list[TopicPartition]) -> None:
        self.reads.append([tp.partition for tp in tps])
        await asyncio.sleep(3600)

    @property
    def reading(self) -> bool:
        return self._task is not None and not self._task.done()


@pytest.fixture(autouse=True)
def faust_revokes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust's own revoke and stop steps need a running app: only ours run here."""
    monkeypatch.setitem(faust_fixes._ORIGINAL, (TableManager, "on_partitions_revoked"), _nothing)
    monkeypatch.setitem(faust_fixes._ORIGINAL, (App, "_on_rebalance_when_stopped"), _nothing)


def _nothing(*_: Any) -> None:
    return None


def a_recovery(seek: Any) -> Any:
    """The end of a table recovery, with ``seek`` standing in for Faust's seek."""

    async def done() -> None:
        return None

    app = SimpleNamespace(
        consumer=SimpleNamespace(
            assignment=lambda: ASSIGNED,
            perform_seek=seek,
            resume_partitions=_nothing,
            resume_flow=_nothing,
        ),
        conf=SimpleNamespace(broker_request_timeout=5),
        flow_control=SimpleNamespace(resume=_nothing),
        _fetcher=SimpleNamespace(maybe_start=done),
    )
    app.preaviso_bulk = Reading(app)
    app.preaviso_bulk.assigned()  # Faust's assignment, before its recovery

    async def wait(coro: Any, timeout: float | None = None) -> Any:
        return await coro

    return SimpleNamespace(
        app=app,
        log=SimpleNamespace(info=_nothing),
        completed=SimpleNamespace(set=_nothing),
        _is_changelog_tp=lambda tp: False,
        _wait=wait,
    )


async def test_the_end_of_a_recovery_starts_the_loader_on_the_assigned_partitions() -> None:
    async def seek() -> None:
        await asyncio.sleep(0)

    recovery = a_recovery(seek)

    await faust_fixes._seek_then_resume(recovery)
    await asyncio.sleep(0)

    loader = recovery.app.preaviso_bulk
    assert loader.reads == [[0, 1]]
    assert loader.reading
    loader.halt()


async def test_a_revoke_while_the_recovery_seeks_leaves_the_loader_halted() -> None:
    """A second worker joins while the seek is awaited: Faust revokes (the loader, not
    started yet, is halted), and the recovery then goes on with partitions no longer ours."""

    async def seek() -> None:
        faust_fixes.halt_bulk_on_revoke(SimpleNamespace(app=recovery.app), ASSIGNED)
        await asyncio.sleep(0)

    recovery = a_recovery(seek)

    await faust_fixes._seek_then_resume(recovery)
    await asyncio.sleep(0)

    assert recovery.app.preaviso_bulk.reads == []
    assert not recovery.app.preaviso_bulk.reading


async def test_a_revoke_after_the_assignment_keeps_the_recovery_from_starting_the_loader() -> None:
    """Faust's recovery goes on after a revoke until the next assignment: the partitions it
    restored for are gone by the time it ends."""

    async def seek() -> None:
        await asyncio.sleep(0)

    recovery = a_recovery(seek)
    faust_fixes.halt_bulk_on_revoke(SimpleNamespace(app=recovery.app), ASSIGNED)

    await faust_fixes._seek_then_resume(recovery)
    await asyncio.sleep(0)

    assert recovery.app.preaviso_bulk.reads == []


async def test_the_next_assignment_starts_the_loader_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through Faust's own entry point for an assignment (``TableManager.on_rebalance``)."""

    async def rebalance(*_: Any) -> None:
        return None

    monkeypatch.setitem(faust_fixes._ORIGINAL, (TableManager, "on_rebalance"), rebalance)
    recovery = a_recovery(lambda: asyncio.sleep(0))
    faust_fixes.halt_bulk_on_revoke(SimpleNamespace(app=recovery.app), ASSIGNED)

    await faust_fixes.note_assignment(SimpleNamespace(app=recovery.app), ASSIGNED, set(), set(), 2)
    await faust_fixes._seek_then_resume(recovery)
    await asyncio.sleep(0)

    loader = recovery.app.preaviso_bulk
    assert loader.reads == [[0, 1]]
    loader.halt()


async def test_a_stopping_worker_halts_the_loader_before_its_partitions_go() -> None:
    recovery = a_recovery(lambda: asyncio.sleep(0))
    await faust_fixes._seek_then_resume(recovery)
    await asyncio.sleep(0)
    loader = recovery.app.preaviso_bulk
    assert loader.reading

    faust_fixes.halt_bulk_on_stop(recovery.app)  # Faust skips the revoke when it stops
    await asyncio.sleep(0)

    assert not loader.reading


async def test_a_batch_whose_partition_moved_is_neither_written_nor_committed() -> None:
    """Faust's commit drops the offsets of partitions no longer assigned and says it
    committed: the loader must see it moved itself, and write nothing of the batch."""
    producer = FakeProducer(failing=("none", 0))
    commits: list[Any] = []

    async def commit(offsets: Any) -> bool:
        commits.append(offsets)
        return True

    app = SimpleNamespace(
        producer=SimpleNamespace(_ensure_producer=lambda: producer),
        consumer=faust_consumer(lambda: {TP(IMPACTS, 0)}, commit),
    )
    pipe = SimpleNamespace(app=app, settings=SimpleNamespace(partitions=2), tables={})
    loader = bulk.BulkLoader(pipe, {})  # type: ignore[arg-type]
    batch = bulk.Batch(pipe)  # type: ignore[arg-type]
    batch.sends.append(("x.notices", b"C1", b"notice", 1))
    fetched = {
        TopicPartition(IMPACTS, 0): [SimpleNamespace(offset=7)],
        TopicPartition(IMPACTS, 1): [SimpleNamespace(offset=41)],  # moved to another worker
    }

    assert await loader._finish(batch, fetched) is False  # type: ignore[arg-type]

    assert producer.log == {}
    assert commits == []
