"""No customer or purchase is lost when a worker crashes, stops or is joined mid-load.

The directory stages read in bulk (``agents/bulk.py``): a plain consumer on the
partitions Faust assigned, table entries stored after their changelog records, the
fetch committed last. Each test strikes while the directory is still loading, waits
until the group has read it all, then publishes a policy change for everyone and the
DW-400 discontinuation: every customer the oracle (``tests/oracle.py``) names must
get each notice exactly once (no fault happens while mails go out, so no duplicate
is allowed), and nothing may be dead-lettered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from preaviso.devtools import dataset
from preaviso.devtools.chaos import run_cycle
from preaviso.devtools.observe import partition_lag
from preaviso.devtools.rig import Rig
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded, UpstreamEvent
from preaviso.streams import topics as t
from tests import oracle

pytestmark = pytest.mark.integration

CUSTOMERS, OWNED = dataset.directory(6000, seed=31)
"""About 30,000 stage records, loaded 100 at a time (``directory_batch``): a load that
lasts several seconds, so a fault lands in it, between many commits."""


@pytest.fixture
def rig(rig: Rig) -> Rig:
    rig.settings = rig.settings.model_copy(update={"directory_batch": 100})
    return rig


def directory_lag(rig: Rig) -> int:
    """Directory records the group has yet to commit (0 while the lag is unknown)."""
    names = {s.name for s in t.DIRECTORY_TOPICS}
    lag = partition_lag(rig.settings).items()
    return sum(max(v, 0) for k, v in lag if k.split("[")[0] in names)


def publish_then_strike(rig: Rig, events: Sequence[UpstreamEvent], strike: str) -> None:
    """Publish ``events`` and, once the group has started loading them, run ``strike``."""
    publishing = threading.Thread(target=rig.publish, args=(events,))
    publishing.start()
    behind = 0
    while publishing.is_alive() and not behind:
        behind = directory_lag(rig)
    name, op = strike.split(":")
    if op == "kill":
        rig.kill(name)
    elif op == "stop":
        rig.stop(name)
    else:
        rig.start(name, empty_data=op == "start-empty")
    publishing.join()
    assert behind > 0, "the load was over before the fault: the test proves nothing"
    print(f"{strike} with {behind} directory records still to read")


def assert_every_customer_hears_once(
    rig: Rig, customers: Sequence[CustomerUpserted], owned: Sequence[OwnershipRecorded]
) -> None:
    rig.load_directory([], within=180)
    people = [c.model_dump(mode="json") for c in customers]
    things = [o.model_dump(mode="json") for o in owned]
    changes = [dataset.policy_for_everyone("policy-after"), dataset.dishwasher_discontinued()]
    for change in changes:
        expected = oracle.expected_mails(
            people, things, change.model_dump(mode="json"), rig.settings.message_id_domain
        )
        report = run_cycle(rig, change.event_id, change, expected, timeout=150)
        print(report.summary())
        assert not report.problems(), f"{report.explain()}\n{rig.log_tails()}"


@pytest.mark.parametrize("empty_data", [False, True], ids=["same data dir", "empty data dir"])
def test_a_directory_load_killed_midway_loses_no_customer_and_no_purchase(
    rig: Rig, empty_data: bool
) -> None:
    rig.start("a")
    rig.load_directory([])  # the worker is up and has joined

    publish_then_strike(rig, [*CUSTOMERS, *OWNED], "a:kill")
    time.sleep(1)
    rig.start("a", empty_data=empty_data)

    assert_every_customer_hears_once(rig, CUSTOMERS, OWNED)


def renamed(prefix: str) -> tuple[list[CustomerUpserted], list[OwnershipRecorded]]:
    """The same directory under other customer ids: a second load as big as the first."""

    def ids(record: CustomerUpserted | OwnershipRecorded) -> dict[str, str]:
        return {"customer_id": prefix + record.customer_id, "event_id": prefix + record.event_id}

    return [c.model_copy(update=ids(c)) for c in CUSTOMERS], [
        o.model_copy(update=ids(o)) for o in OWNED
    ]


def test_rebalances_mid_load_lose_no_customer_and_no_purchase(rig: Rig) -> None:
    rig.start("a")
    rig.load_directory([])
    more, more_owned = renamed("X")

    publish_then_strike(rig, [*CUSTOMERS, *OWNED], "b:start-empty")
    rig.load_directory([], within=180)  # the join's rebalance is over
    publish_then_strike(rig, [*more, *more_owned], "a:stop")

    assert_every_customer_hears_once(rig, [*CUSTOMERS, *more], [*OWNED, *more_owned])


def test_the_same_directory_published_again_is_read_to_the_end(rig: Rig) -> None:
    """Every customer is already there, in the same region: fetches that only read some
    table partitions must still be written and committed (the loader once stalled here)."""
    rig.start("a")
    rig.load_directory([*CUSTOMERS, *OWNED], within=180)

    rig.load_directory([*CUSTOMERS, *OWNED], within=180)  # raises if the lag stays above 0
