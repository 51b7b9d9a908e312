"""The loop every agent runs: failures dead-lettered, sends awaited before the ack.

Faust acks (and later commits) an event once the agent moves past it. So a stage
must never raise out of its loop (Faust would commit past the record and the
agent would die), and must await everything it produced before taking the next
record: then a crash re-reads records instead of losing them (at-least-once).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from preaviso.schemas.records import DeadLetter
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import encode

log = logging.getLogger("preaviso.stage")

EventHandler = Callable[[Any], Awaitable[None]]


class Outbox:
    """Records a stage produces for one input record; all awaited before that record is acked."""

    def __init__(self, pipe: Pipeline) -> None:
        self._pipe = pipe
        self._pending: list[Awaitable[Any]] = []

    async def send(
        self, spec: t.TopicSpec, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        fut = await self._pipe.app.producer.send(
            self._pipe.topic_name(spec), key, value, partition, None, None
        )
        self._pending.append(fut)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)


def dead_letter_for(event: Any, stage: str, exc: BaseException) -> DeadLetter:
    msg = event.message
    key = msg.key if isinstance(msg.key, bytes) else None
    value = msg.value if isinstance(msg.value, bytes) else b""
    return DeadLetter(
        stage=stage,
        reason=str(exc)[:4000] or type(exc).__name__,
        error_type=type(exc).__name__,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=base64.b64encode(key).decode() if key is not None else None,
        value=base64.b64encode(value).decode(),
        failed_at=datetime.now(UTC),
    )


def run_stage(
    pipe: Pipeline,
    source: t.TopicSpec,
    stage: str,
    on_event: Callable[[Outbox], EventHandler],
) -> Any:
    """Register one agent (concurrency 1) that runs a handler over each record of ``source``.

    Records are taken one at a time with ``stream.events()``: Faust's batching
    (``take``/``take_events``) was seen to strand the last records of a burst here,
    a known upstream bug, and a notice must never be stranded.
    """
    app = pipe.app
    outbox = Outbox(pipe)

    async def dead_letter(event: Any, exc: BaseException) -> None:
        letter = dead_letter_for(event, stage, exc)
        log.warning(
            "stage %s: dead-lettered %s[%d]@%d: %s: %.300s",
            stage,
            letter.topic,
            letter.partition,
            letter.offset,
            letter.error_type,
            letter.reason,
        )
        await outbox.send(t.DEAD_LETTERS, event.message.key, encode(letter))

    async def agent(stream: Any) -> None:
        handle = on_event(outbox)
        async for event in stream.events():
            try:
                await handle(event)
                await outbox.flush()
            except Exception as exc:  # every failure is dead-lettered, never raised
                await dead_letter(event, exc)
                await outbox.flush()

    agent.__name__ = f"stage_{stage.replace('-', '_')}"
    return app.agent(pipe.topics[source.name], name=stage, concurrency=1)(agent)
