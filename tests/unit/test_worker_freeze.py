"""The worker sets what lives on aside from the collector once, after its first recovery."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import faust
import pytest

from preaviso.worker import freeze_once_ready


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_the_first_recovery_freezes_what_lives_then_and_later_ones_nothing_more() -> None:
    app = faust.App("freeze-test")
    freeze_once_ready(app)
    assert gc.get_freeze_count() == 0

    await app.on_rebalance_complete.send()
    frozen = gc.get_freeze_count()
    assert frozen > 0

    made_later = [[] for _ in range(1000)]  # alive at the next recovery, not frozen by it
    await app.on_rebalance_complete.send()
    assert gc.get_freeze_count() == frozen
    assert made_later
