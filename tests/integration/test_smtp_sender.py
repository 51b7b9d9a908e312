"""A relay that refuses the sender is a configuration to fix, not a verdict on each notice:
real broker, real worker, the faulty SMTP server answering MAIL FROM with 550 for a while."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.integration.test_smtp_faults import (
    Rig,
    discontinued,
    emails,
    people,
    report,
    rig_for,
)

__all__ = ["rig_for"]  # the fixture, shared with the other SMTP fault tests

pytestmark = pytest.mark.integration

REFUSED_FOR = 6.0
"""Seconds the relay refuses the sender, from its first refusal (the operator's fix)."""


def test_a_refused_sender_holds_the_notices_until_the_relay_allows_it(
    rig_for: Callable[..., Rig],
) -> None:
    group = people("snd", "SKU-S", 4)
    rig = rig_for(refuse_sender=REFUSED_FOR)
    rig.stack.start_worker()
    rig.publish_directory(group)

    rig.publish(discontinued("disc-s", "SKU-S"))
    rig.wait(lambda: bool(rig.events("sender refused")), "the relay refusing the sender")
    first_refusal = rig.events("sender refused")[0]["at"]
    rig.wait(lambda: all(rig.saved_for(a) for a in emails(group)), "every mail, once allowed")
    receipts = rig.receipts(len(group))
    time.sleep(2)  # time for a duplicate to show, were there one
    saved = {a: rig.saved_for(a) for a in emails(group)}
    report(
        "refused sender",
        refused_for_s=REFUSED_FOR,
        refusals=len(rig.events("sender refused")),
        last_saved_s=round(max(at for ats in saved.values() for at in ats) - first_refusal, 2),
    )

    assert all(len(ats) == 1 for ats in saved.values()), saved
    assert all(ats[0] >= first_refusal + REFUSED_FOR for ats in saved.values())
    assert sorted(r["recipient"] for r in receipts) == sorted(emails(group))
    assert {r["status"] for r in receipts} == {"sent"}  # none settled as rejected
    assert rig.dead_letters() == []
