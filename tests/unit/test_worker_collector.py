"""The worker makes the cyclic collector cheap: rare young passes, and what lives on
after its first recovery set aside once."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import faust
import pytest

from preaviso.worker import YOUNG_PASS, collect_less


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_the_first_recovery_freezes_what_lives_then_and_later_ones_nothing_more() -> None:
    app = faust.App("freeze-test")
    collect_less(app)
    assert gc.get_freeze_count() == 0

    await app.on_rebalance_complete.send()
    frozen = gc.get_freeze_count()
    assert frozen > 0

    made_later = [[] for _ in range(1000)]  # alive at the next recovery, not frozen by it
    await app.on_rebalance_complete.send()
    assert gc.get_freeze_count() == frozen
    assert made_later


def test_young_passes_come_every_ten_thousand_new_objects_not_seven_hundred() -> None:
    collect_less(faust.App("threshold-test"))
    assert gc.get_threshold()[0] == YOUNG_PASS == 10_000
