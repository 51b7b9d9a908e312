"""Composite keys and the dedup ledgers: one entry per (customer, notice).

The table is a dict that counts reads and writes: a lookup and a write must cost the
same whatever the customer's history.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from preaviso.agents import ledger
from preaviso.schemas.events import CustomerUpserted
from preaviso.schemas.records import notice_id_for
from preaviso.streams import keys
from tests.unit.tables import CountingTable

UNUSUAL_IDS = ["C1", "C10", "C1.2", "C1:2", "C1-2", "C1_2", "a", "Z" * 64, "0:.-_"]


def test_a_group_prefix_selects_its_members_only_whatever_the_ids_hold() -> None:
    stored = sorted(keys.key(g.encode(), m.encode()) for g in UNUSUAL_IDS for m in UNUSUAL_IDS)
    for group in UNUSUAL_IDS:
        prefix = keys.prefix(group.encode())
        members = [keys.member(k, prefix).decode() for k in stored if k.startswith(prefix)]
        # "C1" does not pick up "C10" or "C1.2", and members come in id order.
        assert members == sorted(UNUSUAL_IDS)


@pytest.mark.parametrize("part", [b"", b"C1\x1fC2"])
def test_a_key_part_that_could_break_a_prefix_is_refused(part: bytes) -> None:
    with pytest.raises(ValueError, match="0x1F"):
        keys.key(part, b"x")
    with pytest.raises(ValueError, match="0x1F"):
        keys.key(b"x", part)


@pytest.mark.parametrize("field", ["customer_id", "region"])
def test_the_contracts_refuse_the_separator_in_ids(field: str) -> None:
    fields = {"customer_id": "C1", "email": "a@example.com", "name": "A", "region": "ES-CT"}
    with pytest.raises(ValidationError):
        CustomerUpserted(**{**fields, field: "C1\x1fX"})  # type: ignore[arg-type]


@pytest.mark.parametrize("cid", UNUSUAL_IDS)
def test_the_ledger_knows_a_notice_only_for_its_customer(cid: str) -> None:
    table = CountingTable()
    notice = notice_id_for("e1", cid)

    assert not ledger.contains(table, cid.encode(), notice)
    ledger.add(table, cid.encode(), notice)

    assert ledger.contains(table, cid.encode(), notice)
    assert not ledger.contains(table, (cid + "0").encode(), notice)
    assert not ledger.contains(table, cid.encode(), notice_id_for("e2", cid))


def test_a_ledger_write_and_lookup_cost_the_same_after_a_thousand_notices() -> None:
    table = CountingTable()
    for n in range(1000):
        ledger.add(table, b"C1", notice_id_for(f"e{n}", "C1"))
    table.reads = table.writes = table.written = 0

    ledger.add(table, b"C1", notice_id_for("last", "C1"))
    seen = ledger.contains(table, b"C1", notice_id_for("e500", "C1"))

    assert seen
    assert (table.reads, table.writes, table.written) == (1, 1, len(keys.MARK))
