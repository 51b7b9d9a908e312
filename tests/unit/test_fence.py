"""The fence: after the worker stood still longer than a heartbeat interval, no new mail
goes out until the group has accepted a commit asked after the stall."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from preaviso.agents import fence as fences
from preaviso.agents.fence import Fence, Prove, stall_limit
from tests.unit.stage_fakes import ACKED, record
from tests.unit.test_deliver_records import SETTINGS, Deliver, a_notice


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Group:
    """The group's answers to the fence's proofs, one per proof, in order."""

    def __init__(self, *answers: bool | None, clock: Clock | None = None, stall: float = 0) -> None:
        self.answers = list(answers)
        self.asked = 0
        self._clock, self._stall = clock, stall

    async def prove(self) -> bool | None:
        self.asked += 1
        if self._clock is not None and self.asked == 1:  # the worker stands still meanwhile
            self._clock.now += self._stall
        await asyncio.sleep(0)
        return self.answers.pop(0)


async def flowing(seconds: float) -> bool:
    await asyncio.sleep(0)
    return True


async def stopping(seconds: float) -> bool:
    return False


@pytest.fixture
def clock() -> Clock:
    return Clock()


def stalled(prove: Prove, clock: Clock, seconds: float = 5.0) -> Fence:
    """A fence (stall limit 1 s) that looked at the clock once, then saw ``seconds`` pass:
    the worker stood still (SIGSTOP, a frozen VM) and its event loop did not run."""
    fence = Fence(prove, stall=1.0, clock=clock)
    assert fence.is_open()
    clock.now += seconds
    return fence


async def test_the_fence_stays_open_while_the_worker_keeps_looking_at_its_clock(
    clock: Clock,
) -> None:
    group = Group()
    fence = Fence(group.prove, stall=1.0, clock=clock)
    for _ in range(20):
        assert fence.is_open()
        clock.now += 0.9
    fence.close()

    assert group.asked == 0


async def test_after_a_stall_no_mail_goes_out_until_the_group_accepts_a_proof(
    clock: Clock,
) -> None:
    group = Group(True)
    fence = stalled(group.prove, clock, 1.5)

    assert not fence.is_open()
    assert await fence.cleared(flowing)
    assert fence.is_open()
    fence.close()

    assert group.asked == 1


async def test_a_refused_proof_gives_the_waiting_mails_back_and_the_next_one_asks_again(
    clock: Clock,
) -> None:
    group = Group(False, True)
    fence = stalled(group.prove, clock, 30)

    assert not await fence.cleared(flowing)  # the partitions are another worker's now
    assert not fence.is_open()
    assert await fence.cleared(flowing)  # a new assignment's reader proves it again
    fence.close()

    assert group.asked == 2


async def test_a_proof_asked_before_a_further_stall_does_not_count(clock: Clock) -> None:
    group = Group(True, True, clock=clock, stall=5)  # the first proof spans a stall
    fence = stalled(group.prove, clock)

    assert await fence.cleared(flowing)
    fence.close()

    assert group.asked == 2


async def test_nothing_to_prove_with_yet_is_asked_again_not_taken_as_refused(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fences, "PROOF_RETRY", 0.0)
    group = Group(None, None, True)
    fence = stalled(group.prove, clock)

    assert await fence.cleared(flowing)
    fence.close()

    assert group.asked == 3


async def test_waiting_for_the_proof_ends_when_the_worker_stops(clock: Clock) -> None:
    never: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def prove() -> bool | None:
        return await never

    fence = stalled(prove, clock)

    assert not await fence.cleared(stopping)
    fence.close()


async def test_a_real_stall_of_the_event_loop_closes_the_fence() -> None:
    fence = Fence(Group().prove, stall=0.3)
    assert fence.is_open()
    await asyncio.sleep(0.6)  # the loop runs: the fence's ticks keep it open
    assert fence.is_open()

    time.sleep(0.4)  # nothing runs: as a stopped process

    assert not fence.is_open()
    fence.close()


async def test_a_proof_cut_off_by_the_worker_stopping_lets_nothing_through(clock: Clock) -> None:
    never: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def prove() -> bool | None:
        return await never

    fence = stalled(prove, clock)
    waiting = asyncio.ensure_future(fence.cleared(flowing))
    await asyncio.sleep(0.01)
    fence.close()  # the worker stops: the proof under way is cancelled, not the waiter

    assert await waiting is False


def test_the_stall_limit_is_a_heartbeat_interval_and_at_least_a_second() -> None:
    assert stall_limit(3.0) == 3.0
    assert stall_limit(0.2) == 1.0


async def test_a_worker_that_stood_still_sends_nothing_new_until_its_group_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deliver, frozen past its session then resumed, still holds what it fetched; the
    group may have given it to another worker meanwhile. It waits for the group: refused,
    the mail goes back unsent (its next owner sends it); accepted, it goes out."""
    ACKED.clear()
    monkeypatch.setattr(fences, "STALL_MIN", 0.3)
    settings = SETTINGS.model_copy(update={"kafka_heartbeat_interval": 0.3})
    worker = Deliver(tmp_path, monkeypatch, settings)
    worker.producer.opened.set()
    worker.stage.feed.put(record(0, a_notice(0)))
    worker.stage.start()
    await worker.stage.until(lambda: ACKED == [(0, 0)])

    time.sleep(0.5)  # the worker stands still
    worker.stage.feed.put(record(1, a_notice(1)))
    await worker.stage.until(lambda: worker.group.asked == 1)
    await asyncio.sleep(0.1)
    assert len(worker.smtp.sent) == 1  # n0 only: n1 waits for the group's answer

    worker.group.answers.put_nowait(False)  # refused: the partitions moved on
    await worker.stage.until(lambda: worker.stage.loop.held == 0)
    await worker.stage.stop()
    assert len(worker.smtp.sent) == 1  # n1 given back, unsent
    assert ACKED == [(0, 0)]

    again = worker.next_run()  # the partition assigned again, n1 read again
    again.feed.put(record(1, a_notice(1)))
    again.start()
    await again.until(lambda: worker.group.asked == 2)  # the new reader proves itself
    worker.group.answers.put_nowait(True)
    await again.until(lambda: ACKED == [(0, 0), (0, 1)])
    await again.stop()

    assert len(worker.smtp.sent) == 2
    assert worker.recorded("n1")
