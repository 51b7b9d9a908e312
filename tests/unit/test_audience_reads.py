"""What the audience stages read: a SKU's owners and a policy's candidates, on real stores."""

from __future__ import annotations

from datetime import date

from preaviso.agents.audience import candidates, owners_of
from preaviso.audience import DirectoryEntry, owned_product
from preaviso.devtools import dataset
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded, PolicyScope
from preaviso.streams import keys
from preaviso.streams.codecs import encode
from tests.unit.stores import Tables


def own(cid: str, sku: str) -> OwnershipRecorded:
    return OwnershipRecorded(
        customer_id=cid, sku=sku, product_name="Lavavajillas", purchase_date=date(2024, 5, 1)
    )


def test_the_owners_of_a_sku_come_from_its_entries_in_id_order(tables: Tables) -> None:
    owners = tables.table("owners")
    for cid, sku in [("C2", "DW400-W"), ("C10", "DW400-W"), ("C1", "DW400-WX"), ("C1", "DW400")]:
        ownership = own(cid, sku)
        tables.put(
            owners, 0, keys.key(sku.encode(), cid.encode()), encode(owned_product(ownership))
        )

    found = list(owners_of(owners, "DW400-W", 0))

    assert [(cid, p.sku) for cid, p in found] == [("C10", "DW400-W"), ("C2", "DW400-W")]


def person(cid: str, region: str) -> CustomerUpserted:
    return CustomerUpserted(customer_id=cid, email="a@example.com", name="A", region=region)


def test_a_regional_policy_reads_the_index_and_skips_customers_who_moved(tables: Tables) -> None:
    customers, by_region = tables.table("customers"), tables.table("customers-by-region")
    for cid, region, indexed in [
        ("C1", "ES-CT", ["ES-CT"]),
        ("C2", "ES-AN", ["ES-CT", "ES-AN"]),  # moved; the old entry survived a crash
        ("C3", "ES-MD", ["ES-MD"]),
    ]:
        entry = DirectoryEntry(partition=0, customer=person(cid, region))
        tables.put(customers, 0, cid.encode(), encode(entry))
        for r in indexed:
            tables.put(by_region, 0, keys.key(r.encode(), cid.encode()), keys.MARK)
    change = dataset.warranty_change()  # ES-CT and ES-AN

    found = [c.customer_id for c in candidates(customers, by_region, change, 0)]

    assert found == ["C2", "C1"]  # ES-AN then ES-CT; C2 once, C3 not read at all


def test_a_policy_for_everyone_reads_the_partition_store(tables: Tables) -> None:
    customers, by_region = tables.table("customers"), tables.table("customers-by-region")
    for partition, cid in [(0, "C1"), (0, "C2"), (1, "C3")]:
        entry = DirectoryEntry(partition=partition, customer=person(cid, "GB-LND"))
        tables.put(customers, partition, cid.encode(), encode(entry))
    change = dataset.warranty_change().model_copy(update={"scope": PolicyScope(all_customers=True)})

    found = [c.customer_id for c in candidates(customers, by_region, change, 0)]

    # RocksDB reads partition 0 only; the memory store (dev only) returns every
    # customer and leaves policy_impacts to keep those of partition 0.
    assert found == (["C1", "C2"] if tables.rocksdb else ["C1", "C2", "C3"])
