"""``run_stage``: each time Faust starts a stage's agent, its loop starts afresh."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from types import SimpleNamespace
from typing import Any

from preaviso.agents.stage import Outbox, run_stage
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from tests.unit.stage_fakes import record
from tests.unit.test_stage_batches import Feed


async def test_an_agent_started_again_claims_afresh_what_its_ended_loop_held() -> None:
    """Faust starts an agent again when its loop ended (a crash): the record the old loop
    held, never released, is read again, and the new loop must be free to handle it. A
    claim the old loop left behind would make deliver-retry skip that notice for good."""
    agents: dict[str, Any] = {}

    def agent(channel: Any, name: str, concurrency: int) -> Any:
        return lambda fn: agents.setdefault(name, fn)

    pipe = Pipeline(
        settings=Settings(topic_prefix="t."),
        app=SimpleNamespace(agent=agent),
        topics={t.NOTICES_RETRY.name: object()},
    )
    claimed: list[bool] = []

    def on_event(outbox: Outbox) -> Any:
        async def handle(event: Any) -> None:
            claimed.append(outbox.claim("n1", event=event))
            await asyncio.Event().wait()  # holds the record until the loop ends

        return handle

    run_stage(pipe, t.NOTICES_RETRY, "deliver-retry", on_event, batch_max=1)
    for started in (1, 2):
        feed = Feed()
        feed.put(record(0))
        stream = SimpleNamespace(events=feed.events, channel=SimpleNamespace(queue=feed.queue))
        loop = asyncio.ensure_future(agents["deliver-retry"](stream))
        async with asyncio.timeout(2):
            while len(claimed) < started:
                await asyncio.sleep(0.001)
        loop.cancel()
        with suppress(asyncio.CancelledError):
            await loop

    assert claimed == [True, True]
