"""Who is affected, and why: the pure matching rules, without a broker."""

from __future__ import annotations

from datetime import UTC, date, datetime

from preaviso.audience import (
    DirectoryEntry,
    discontinuation_impacts,
    expected_recipients,
    newer,
    owned_product,
    policy_impacts,
)
from preaviso.devtools import dataset
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded, PolicyScope
from preaviso.schemas.records import Impact, ImpactKind, notice_id_for


def customer(cid: str, region: str = "ES-MD", **kw: object) -> CustomerUpserted:
    return CustomerUpserted(
        customer_id=cid,
        email=f"{cid.lower()}@example.com",
        name=f"Name {cid}",
        region=region,
        **kw,  # type: ignore[arg-type]
    )


def owns(cid: str, sku: str) -> OwnershipRecorded:
    return OwnershipRecorded(
        customer_id=cid, sku=sku, product_name=f"Product {sku}", purchase_date=date(2024, 5, 1)
    )


def test_owners_of_a_discontinued_sku_each_get_one_impact_with_the_reason() -> None:
    owners = [
        (o.customer_id, owned_product(o)) for o in (owns("C1", "DW400-W"), owns("C2", "DW400-W"))
    ]
    change = dataset.dishwasher_discontinued("disc-1")

    impacts = list(discontinuation_impacts(change, "DW400-W", owners))

    assert [i.customer_id for i in impacts] == ["C1", "C2"]
    first = impacts[0]
    assert first.kind is ImpactKind.DISCONTINUATION
    assert first.notice_id == notice_id_for("disc-1", "C1")
    assert "DW400-W" in first.reason
    assert "2024-05-01" in first.reason
    assert first.products[0].product_name == "Product DW400-W"
    assert first.spare_parts_until == change.spare_parts_until


def test_a_sku_nobody_owns_affects_nobody() -> None:
    change = dataset.dishwasher_discontinued()
    assert list(discontinuation_impacts(change, "DW400-W", [])) == []


def test_notice_ids_are_stable_per_event_and_customer() -> None:
    assert notice_id_for("e1", "C1") == notice_id_for("e1", "C1")
    assert notice_id_for("e1", "C1") != notice_id_for("e1", "C2")
    assert notice_id_for("e1", "C1") != notice_id_for("e2", "C1")


def test_a_policy_for_some_regions_reaches_only_their_customers_on_this_partition() -> None:
    change = dataset.warranty_change("pol-1")  # regions ES-CT and ES-AN
    entries = [
        DirectoryEntry(partition=0, customer=customer("C1", "ES-CT")),
        DirectoryEntry(partition=0, customer=customer("C2", "ES-MD")),
        DirectoryEntry(partition=1, customer=customer("C3", "ES-AN")),
    ]

    on_zero = list(policy_impacts(change, entries, partition=0))
    on_one = list(policy_impacts(change, entries, partition=1))

    assert [i.customer_id for i in on_zero] == ["C1"]
    assert [i.customer_id for i in on_one] == ["C3"]
    assert "ES-CT" in on_zero[0].reason
    assert on_zero[0].new_terms == change.new_terms


def test_a_policy_for_all_customers_reaches_everyone() -> None:
    change = dataset.warranty_change().model_copy(update={"scope": PolicyScope(all_customers=True)})
    entries = [DirectoryEntry(partition=0, customer=customer(f"C{i}", "GB-LND")) for i in range(3)]
    assert len(list(policy_impacts(change, entries, 0))) == 3


def test_an_older_upsert_never_replaces_a_newer_one() -> None:
    new = customer("C1", occurred_at=datetime(2026, 2, 1, tzinfo=UTC))
    old = customer("C1", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    entry = DirectoryEntry(partition=0, customer=new)
    assert newer(None, old)
    assert not newer(entry, old)
    assert newer(entry, new)


def test_the_oracle_counts_owners_of_any_listed_sku_once() -> None:
    people = {c.customer_id: c for c in [customer("C1"), customer("C2"), customer("C3")]}
    owned = [
        owns("C1", "DW400-W"),
        owns("C1", "DW400-S"),
        owns("C2", "WM700"),
        owns("C9", "DW400-S"),
    ]
    assert expected_recipients(people, owned, dataset.dishwasher_discontinued()) == {"C1"}


def test_every_impact_of_a_fan_out_is_a_valid_contract_of_its_own() -> None:
    """The first impact is validated; the others are copies with their own fields. Each
    must survive validation as if built alone, and carry its own event id."""
    entries = [DirectoryEntry(partition=0, customer=customer(f"C{n}", "ES-CT")) for n in range(3)]
    scoped = dataset.warranty_change("policy-2").model_copy(
        update={"scope": PolicyScope(regions=["ES-CT"])}
    )
    owners = [(o.customer_id, owned_product(o)) for o in (owns("C1", "X1"), owns("C2", "X1"))]
    gone = dataset.dishwasher_discontinued("disc-2")

    for impacts in (
        list(policy_impacts(scoped, entries, 0)),
        list(discontinuation_impacts(gone, "X1", owners)),
    ):
        for impact in impacts:
            assert Impact.model_validate(impact.model_dump()) == impact
        assert len({i.event_id for i in impacts}) == len(impacts)
        assert [i.notice_id for i in impacts] == [
            notice_id_for(impacts[0].cause_event_id, i.customer_id) for i in impacts
        ]
    last = list(policy_impacts(scoped, entries, 0))[-1]
    assert (last.customer_id, last.scope_region, last.title) == ("C2", "ES-CT", scoped.title)
    assert "ES-CT" in last.reason
