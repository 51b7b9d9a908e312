"""No new mail from a worker that may have lost its partitions without knowing it yet.

A worker paused past its session timeout (``SIGSTOP``, a debugger, a frozen container)
is no crash: resumed, its reader still holds what it had fetched, and deliver would go on
sending it while the group has given its partitions to another worker, which sends the
same notices from the committed offsets. Its next commit or heartbeat is refused within
a second or two and the revoke stops it, but meanwhile it sends them twice (stop 22
measured up to 120, against a crash's bound of 28 at 4 connections).

So the worker watches its own clock. A look more than a heartbeat interval late means
the event loop stood still (the whole process paused, or the loop blocked), long enough
that the session may be gone. After such a stall no new mail goes out until the group
has accepted a commit asked after it: proof that this worker still holds its
partitions. A refused one means it does not: the mails waiting are given back unsent,
for their next owner to send. Mails already on their way when the worker stood still
are in the unrecorded window, which bounds them as it bounds a crash.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("preaviso.fence")

TICK = 0.25
"""Seconds between the fence's looks at the clock while the worker runs."""
STALL_MIN = 1.0
"""Seconds: the shortest stall the fence closes for, well over its ``TICK`` and a busy
loop's longest step (a batch's flush takes milliseconds)."""
PROOF_POLL = 0.05
"""Seconds between looks at a proof under way (``Pause`` may only sleep a whole span)."""
PROOF_RETRY = 0.5
"""Seconds before asking again when there was nothing to prove with (no partitions yet)."""

Prove = Callable[[], Awaitable[bool | None]]
"""Commit again what the group holds from this worker: True if accepted, False if refused
(the partitions moved), None if there is nothing to commit with yet."""
Pause = Callable[[float], Awaitable[bool]]
"""Sleep that many seconds; False if the worker stops (or rebalances) meanwhile."""


def stall_limit(heartbeat_interval: float) -> float:
    """The stall that may have cost the session: a heartbeat interval (at most a third of
    the session timeout, so the gap between two heartbeats stays under two thirds of it),
    but never under ``STALL_MIN``."""
    return max(heartbeat_interval, STALL_MIN)


def stall_clock() -> float:
    """Seconds on a clock that also runs while the machine is suspended (``CLOCK_BOOTTIME``
    on Linux): a suspended machine's partitions move on just the same. (A hypervisor that
    hides a VM's pause from its clocks, as kvmclock does, hides it from the fence too.)"""
    return time.clock_gettime(_CLOCK)


_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


class Fence:
    """Open while no stall was seen since the group last confirmed this worker's membership."""

    def __init__(self, prove: Prove, stall: float, clock: Callable[[], float] = stall_clock):
        self._prove = prove
        self._stall = stall
        self._clock = clock
        self._last: float | None = None  # the last look at the clock
        self._stalled_at = -math.inf  # when the last stall was seen
        self._proven_at = -math.inf  # when the last accepted proof was asked
        self._proof: asyncio.Task[bool | None] | None = None
        self._ticking: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Look at the clock from now on (the worker starts): a stall is logged even while
        the worker holds no partitions; ``is_open`` starts it too, should this not run."""
        if self._ticking is None:
            self._tick()

    def is_open(self) -> bool:
        """True unless a stall was seen (now or before) and no proof asked since was accepted."""
        self.start()
        self._look(self._clock())
        return self._proven_at >= self._stalled_at

    async def cleared(self, pause: Pause) -> bool:
        """True once new mails may go out (at once unless the fence is closed); False if the
        group refused the proof, or ``pause`` says the worker stops meanwhile."""
        while not self.is_open():
            proof = self._proof
            if proof is None or proof.done():
                proof = self._proof = asyncio.ensure_future(self._ask())
            while not proof.done():
                if not await pause(PROOF_POLL):
                    return False
            if proof.cancelled():  # ``close``: the worker stops; never the waiter's own
                return False
            answer = proof.result()
            if answer is False:
                return False
            if answer is None and not await pause(PROOF_RETRY):
                return False
        return True

    def close(self) -> None:
        """Stop looking at the clock (the worker stops)."""
        if self._ticking is not None:
            self._ticking.cancel()
        if self._proof is not None:
            self._proof.cancel()

    def _look(self, now: float) -> None:
        last, self._last = self._last, now
        if last is not None and now - last > self._stall:
            self._stalled_at = now
            log.warning(
                "the worker stood still for %.1fs (paused?); no new mail goes out until the "
                "group confirms it still holds its partitions",
                now - last,
            )

    def _tick(self) -> None:
        self._look(self._clock())
        self._ticking = asyncio.get_running_loop().call_later(TICK, self._tick)

    async def _ask(self) -> bool | None:
        asked = self._clock()
        try:
            answer = await self._prove()
        except Exception as exc:  # Faust's consumer not running yet: ask again shortly
            log.warning("confirming the worker's partitions failed (%r); asking again", exc)
            return None
        if answer:
            self._proven_at = max(self._proven_at, asked)
            log.info("the group confirmed this worker's partitions; mails go out again")
        elif answer is False:
            log.warning("the group gave this worker's partitions to another; mails held are "
                        "given back unsent")  # fmt: skip
        return answer
