"""The directory's tables: one entry per (SKU, customer) and per (region, customer).

The tables are dicts that count reads and writes: one record must cost the same
whatever the table already holds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from preaviso.agents.directory import record_owner, upsert_customer
from preaviso.audience import DirectoryEntry
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded
from preaviso.schemas.records import OwnedProduct
from preaviso.streams import keys
from preaviso.streams.codecs import decode
from tests.unit.tables import CountingTable


def customer(cid: str, region: str, day: int = 1) -> CustomerUpserted:
    return CustomerUpserted(
        customer_id=cid,
        email="someone@example.com",
        name="Someone",
        region=region,
        occurred_at=datetime(2026, 1, day, tzinfo=UTC),
    )


def owns(cid: str, sku: str, bought: date = date(2024, 5, 1)) -> OwnershipRecorded:
    return OwnershipRecorded(
        customer_id=cid, sku=sku, product_name="Lavavajillas", purchase_date=bought
    )


def test_an_owner_is_one_write_that_reads_and_rewrites_no_other_owner() -> None:
    table = CountingTable()
    for n in range(10_000):  # beyond the ~9,000 owners one 1 MB value could hold
        record_owner(table, owns(f"C{n:05d}", "DW400-W"))
    before = table.written

    record_owner(table, owns("C99999", "DW400-W"))

    assert table.reads == 0
    assert table.writes == 10_001
    assert table.written - before < 200  # one small OwnedProduct, not the SKU's owners


def test_the_same_ownership_twice_is_one_entry_and_the_last_recorded_wins() -> None:
    table = CountingTable()
    record_owner(table, owns("C1", "X1", date(2020, 1, 1)))
    record_owner(table, owns("C1", "X1", date(2023, 6, 1)))

    assert list(table) == [keys.key(b"X1", b"C1")]
    assert decode(OwnedProduct, table[keys.key(b"X1", b"C1")]).purchase_date == date(2023, 6, 1)


def region_index(table: dict[bytes, bytes]) -> list[tuple[str, str]]:
    return sorted(tuple(k.decode().split("\x1f")) for k in table)  # type: ignore[misc]


def test_a_customer_is_indexed_once_under_their_current_region() -> None:
    customers, by_region = CountingTable(), CountingTable()

    upsert_customer(customers, by_region, customer("C1", "ES-CT", day=1), partition=3)
    upsert_customer(customers, by_region, customer("C1", "ES-CT", day=2), partition=3)
    assert region_index(by_region) == [("ES-CT", "C1")]
    assert by_region.writes == 1  # an unchanged region is not written again

    upsert_customer(customers, by_region, customer("C1", "ES-AN", day=3), partition=3)
    assert region_index(by_region) == [("ES-AN", "C1")]

    upsert_customer(customers, by_region, customer("C1", "ES-MD", day=2), partition=3)  # older
    assert region_index(by_region) == [("ES-AN", "C1")]
    entry = decode(DirectoryEntry, customers[b"C1"])
    assert (entry.partition, entry.customer.region) == (3, "ES-AN")


def test_a_replay_completes_an_index_entry_lost_in_a_crash() -> None:
    customers, by_region = CountingTable(), CountingTable()
    upsert_customer(customers, by_region, customer("C1", "ES-CT"), partition=0)
    by_region.clear()  # the customer's entry was written, the index entry was not

    upsert_customer(customers, by_region, customer("C1", "ES-CT"), partition=0)

    assert region_index(by_region) == [("ES-CT", "C1")]
