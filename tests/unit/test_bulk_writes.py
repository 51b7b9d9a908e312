"""A batch of the bulk directory stages sees each table partition as the store under its
own writes, and stores them (with the changelog offset) only when asked to."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from preaviso.agents import bulk
from preaviso.streams import faust_fixes, scan
from tests.unit.stores import Tables


def test_a_batch_reads_the_store_under_its_own_writes(tables: Tables) -> None:
    table = tables.table("customers")
    tables.put(table, 1, b"C1", b"stored")
    tables.put(table, 1, b"C2", b"stored")
    writes = bulk.TableWrites(table, 1)

    writes[b"C1"] = b"new"
    del writes[b"C2"]
    writes[b"C3"] = b"added"

    assert writes.get(b"C1") == b"new"
    assert b"C2" not in writes
    assert writes.get(b"C3") == b"added"
    assert scan.read(table, 1, b"C1") == b"stored"  # nothing stored until the batch is written
    assert scan.read(table, 1, b"C3") is None


def test_stored_writes_replace_and_delete_entries(tables: Tables) -> None:
    table = tables.table("owners")
    tables.put(table, 0, b"old", b"1")

    scan.write(table, 0, {b"old": None, b"new": b"2"}, changelog_offset=41)

    assert scan.read(table, 0, b"old") is None
    assert scan.read(table, 0, b"new") == b"2"
    if tables.rocksdb:  # a restart with this data dir reads the changelog from there on
        changelog = TP(table.changelog_topic.get_topic_name(), 0)
        assert table.data.persisted_offset(changelog) == 41


class Loader:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.topics = frozenset({"x.customers"})

    def start(self, assigned: set[Any]) -> None:
        self.log.append(f"start {sorted(tp.partition for tp in assigned)}")

    def halt(self) -> None:
        self.log.append("halt")


async def test_faust_resumes_every_stream_partition_but_the_bulk_ones_and_starts_the_loader() -> (
    None
):
    log: list[str] = []
    assigned = {TP("x.customers", 0), TP("x.customers", 2), TP("x.impacts", 0)}
    resumed: set[Any] = set()

    async def done(*_: Any, **__: Any) -> None:
        return None

    app = SimpleNamespace(
        preaviso_bulk=Loader(log),
        consumer=SimpleNamespace(
            assignment=lambda: assigned,
            perform_seek=done,
            resume_partitions=resumed.update,
            resume_flow=lambda: log.append("resume_flow"),
        ),
        conf=SimpleNamespace(broker_request_timeout=5),
        flow_control=SimpleNamespace(resume=lambda: None),
        _fetcher=SimpleNamespace(maybe_start=done),
    )
    recovery = SimpleNamespace(
        app=app,
        log=SimpleNamespace(info=lambda *a: None),
        completed=SimpleNamespace(set=lambda: None),
        _is_changelog_tp=lambda tp: False,
        _wait=lambda coro, timeout: coro,
    )

    await faust_fixes._seek_then_resume(recovery)

    assert resumed == {TP("x.impacts", 0)}  # Faust never fetches the bulk topics
    assert log == ["resume_flow", "start [0, 2]"]


def test_a_revoke_halts_the_loader_before_faust_goes_on(monkeypatch: Any) -> None:
    from faust.tables.manager import TableManager

    log: list[str] = []
    monkeypatch.setitem(
        faust_fixes._ORIGINAL,
        (TableManager, "on_partitions_revoked"),
        lambda tables, revoked: log.append("faust revokes"),
    )
    tables = SimpleNamespace(app=SimpleNamespace(preaviso_bulk=Loader(log)))

    faust_fixes.halt_bulk_on_revoke(tables, set())

    assert log == ["halt", "faust revokes"]
