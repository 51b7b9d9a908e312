"""Stand-ins for an aiokafka producer's batch API, for the stages that write in bulk."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any


class GatedProducer:
    """Writes every batch at once, except those for ``gated`` topics: held until opened."""

    def __init__(self, gated: str) -> None:
        self.gated, self.opened = gated, asyncio.Event()
        self.written: list[tuple[str, int, list[Any]]] = []
        self.log: dict[tuple[str, int], list[Any]] = {}

    def create_batch(self) -> Any:
        records: list[Any] = []
        return SimpleNamespace(
            records=records,
            append=lambda *, key, value, timestamp: records.append((key, value)) or object(),
            close=lambda: None,
        )

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        return asyncio.ensure_future(self._write(batch.records, topic, partition))

    async def _write(self, records: list[Any], topic: str, partition: int) -> Any:
        if topic == self.gated:
            await self.opened.wait()
        self.written.append((topic, partition, records))
        log = self.log.setdefault((topic, partition), [])
        log.extend(records)
        return SimpleNamespace(offset=len(log) - len(records))  # the batch's first offset
