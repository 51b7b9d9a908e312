"""A policy's copies fan out beside the loop: a few at once, a partition's in order."""

from __future__ import annotations

import asyncio

from preaviso.agents.audience import FanOuts


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


class Copies:
    """Fan-outs that start when given a turn and end when the test says so."""

    def __init__(self, fan_outs: FanOuts) -> None:
        self.fan_outs = fan_outs
        self.started: list[str] = []
        self.ends: dict[str, asyncio.Event] = {}

    def fan_out(self, name: str, partition: int) -> asyncio.Task[None]:
        self.ends[name] = asyncio.Event()

        async def run() -> None:
            async with self.fan_outs.turn(partition):
                self.started.append(name)
                await self.ends[name].wait()

        return asyncio.ensure_future(run())


async def test_copies_on_other_partitions_fan_out_together_up_to_the_limit() -> None:
    copies = Copies(FanOuts(partitions=4, at_once=2))
    tasks = [copies.fan_out(f"p{p}", p) for p in range(3)]
    await settle()
    assert copies.started == ["p0", "p1"]  # one built while the other is written

    copies.ends["p0"].set()
    await settle()
    assert copies.started == ["p0", "p1", "p2"]
    for end in copies.ends.values():
        end.set()
    await asyncio.gather(*tasks)


async def test_two_changes_on_one_partition_fan_out_one_after_the_other() -> None:
    """So a customer's impacts keep the order of their changes."""
    copies = Copies(FanOuts(partitions=4, at_once=2))
    first, second = copies.fan_out("first", 1), copies.fan_out("second", 1)
    other = copies.fan_out("other", 2)
    await settle()
    assert copies.started == ["first", "other"]

    copies.ends["first"].set()
    await settle()
    assert copies.started == ["first", "other", "second"]
    for end in copies.ends.values():
        end.set()
    await asyncio.gather(first, second, other)
