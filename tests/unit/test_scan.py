"""Prefix scans on Faust's real table stores (RocksDB through rocksdict, and memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from preaviso.streams import scan
from preaviso.streams.scan import scan_prefix
from tests.unit.stores import Tables


def test_a_scan_returns_the_prefix_only_in_key_order(tables: Tables) -> None:
    owners = tables.table("owners")
    for key in [b"B\x1f1", b"A\x1fz", b"AB\x1fy", b"A\x1fa", b"A"]:
        tables.put(owners, 0, key, b"v" + key)

    assert list(scan_prefix(owners, 0, b"A\x1f")) == [
        (b"A\x1fa", b"vA\x1fa"),
        (b"A\x1fz", b"vA\x1fz"),
    ]
    assert [k for k, _ in scan_prefix(owners, 0, b"")] == sorted(
        [b"B\x1f1", b"A\x1fz", b"AB\x1fy", b"A\x1fa", b"A"]
    )
    assert list(scan_prefix(owners, 0, b"C\x1f")) == []


def test_a_rocksdb_scan_reads_one_partition_and_never_faust_offset_entry(tmp_path: Path) -> None:
    tables = Tables("rocksdb://", tmp_path)
    owners = tables.table("owners")
    tables.put(owners, 0, b"A\x1f1", b"p0")
    tables.put(owners, 1, b"A\x1f2", b"p1")
    tables.put(owners, 0, owners.data.offset_key, b"42")

    assert list(scan_prefix(owners, 0, b"")) == [(b"A\x1f1", b"p0")]
    assert list(scan_prefix(owners, 1, b"A\x1f")) == [(b"A\x1f2", b"p1")]


def test_a_rocksdb_scan_stops_at_the_first_key_past_the_prefix() -> None:
    class Db:
        def items(self, from_key: bytes) -> Iterator[tuple[bytes, bytes]]:
            assert from_key == b"A\x1f"
            yield b"A\x1f1", b"1"
            yield b"B\x1f1", b"2"
            raise AssertionError("read past the prefix: the scan is not O(matches)")

    assert list(scan._rocksdict_prefix(Db(), b"A\x1f", b"offset")) == [(b"A\x1f1", b"1")]


def test_a_store_without_a_scan_is_an_error_not_a_silent_full_read() -> None:
    class Other:
        data = object()

    with pytest.raises(TypeError, match="no prefix scan"):
        list(scan_prefix(Other(), 0, b""))
