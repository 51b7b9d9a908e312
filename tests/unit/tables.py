"""A table double for unit tests: a dict that counts what a stage reads and writes."""

from __future__ import annotations

from typing import Any


class CountingTable(dict[bytes, bytes]):
    """A dict that counts reads and writes, and the bytes written, like a table would see."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.writes = 0
        self.written = 0

    def __contains__(self, key: object) -> bool:
        self.reads += 1
        return super().__contains__(key)

    def __getitem__(self, key: bytes) -> bytes:
        self.reads += 1
        return super().__getitem__(key)

    def get(self, key: bytes, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes += 1
        self.written += len(value)
        super().__setitem__(key, value)
