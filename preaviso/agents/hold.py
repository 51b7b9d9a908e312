"""Waiting inside a stage without holding up a stop or a rebalance.

Faust stops a worker, and hands partitions over in a rebalance, only once every
record a stage has started is acked: it suspends the flow of records, then waits
(``stream_wait_empty``). A stage that waits for a long time with a record in hand
(deliver during an SMTP outage, deliver-retry until a parked notice is due) would
hold the stop or the rebalance for as long. So such waits use ``pause``, which
ends early as soon as Faust suspends the flow. The stage then ``let_go``es of the
record: not acked, so its offset is never committed and whoever owns the
partition next reads it again. Nothing is lost, and nothing was sent for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

FLOW_POLL = 0.2
"""Seconds between looks at Faust's flow while waiting: how quickly a stop is noticed."""


def flowing(app: Any) -> bool:
    """False once Faust suspended the flow of records: the worker stops or rebalances."""
    return bool(app.flow_control.is_active())


async def pause(app: Any, seconds: float) -> bool:
    """Sleep ``seconds``; return False early if the flow is suspended meanwhile.

    Cancellation (the agent being stopped) is never caught here.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, seconds)
    while flowing(app):
        left = deadline - loop.time()
        if left <= 0:
            return True
        await asyncio.sleep(min(left, FLOW_POLL))
    return False


def give_back(event: Any) -> None:
    """Give ``event`` back unacked: Faust stops waiting for it and never commits past it.

    Faust waits for a record only while its message is not ``acked``, and commits
    an offset only through its consumer's own bookkeeping (``Consumer.ack``). So
    the flag is set directly; the stage loop then gives back the records after it
    on its partition too (``StageLoop._release``).
    """
    event.message.acked = True


async def let_go(app: Any, event: Any) -> None:
    """Give ``event`` back unacked, then return once records flow again.

    Faust waits for a record only while its message is not ``acked``, and commits
    an offset only through its consumer's own bookkeeping (``Consumer.ack``). So
    the flag is set directly: Faust stops waiting for this record, and the
    committed offset stays before it. The stream's own ack when the agent moves on
    is then a no-op. Waiting for the flow to resume (after a rebalance) means the
    stage takes no record fetched before it; when the worker stops, the flow never
    resumes and the wait ends by cancellation.
    """
    give_back(event)
    await app.flow_control.acquire()
