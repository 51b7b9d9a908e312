"""Faust tables on a real store, without a running app: for the scan and audience tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust

STORES = ["rocksdb://", "memory://"]


class Tables:
    """Tables of a Faust app that never runs; entries go straight into a partition's store."""

    def __init__(self, store: str, datadir: Path) -> None:
        self.app = faust.App(
            f"scan-{store[:3]}", store=store, datadir=str(datadir), key_serializer="raw"
        )
        self.rocksdb = store.startswith("rocksdb")

    def table(self, name: str) -> Any:
        return self.app.Table(name, default=None, partitions=2, key_type=bytes, value_type=bytes)

    def put(self, table: Any, partition: int, key: bytes, value: bytes) -> None:
        if self.rocksdb:
            table.data._db_for_partition(partition).put(key, value)
        else:
            table.data.data[key] = value
