"""Who is affected, and why: the pure matching rules, without a broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime

from preaviso.audience import (
    Candidate,
    DirectoryEntry,
    ImpactRecord,
    discontinuation_impacts,
    expected_recipients,
    newer,
    owned_product,
    policy_impacts,
)
from preaviso.devtools import dataset
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded, PolicyScope
from preaviso.schemas.records import (
    NOTICE_NAMESPACE,
    Impact,
    ImpactKind,
    notice_id_for,
    random_event_id,
)
from preaviso.streams.codecs import decode, encode


def customer(cid: str, region: str = "ES-MD", **kw: object) -> CustomerUpserted:
    return CustomerUpserted(
        customer_id=cid,
        email=f"{cid.lower()}@example.com",
        name=f"Name {cid}",
        region=region,
        **kw,  # type: ignore[arg-type]
    )


def candidate(partition: int, cid: str, region: str) -> Candidate:
    return Candidate(cid, region, partition)


def read(records: Iterable[ImpactRecord]) -> list[Impact]:
    """Each record as notify reads it: validated as an ``Impact``, keyed by its customer."""
    impacts = [decode(Impact, r.value) for r in records]
    assert [r.key for r in records] == [i.customer_id.encode() for i in impacts]
    return impacts


def owns(cid: str, sku: str) -> OwnershipRecorded:
    return OwnershipRecorded(
        customer_id=cid, sku=sku, product_name=f"Product {sku}", purchase_date=date(2024, 5, 1)
    )


def test_owners_of_a_discontinued_sku_each_get_one_impact_with_the_reason() -> None:
    owners = [
        (o.customer_id, owned_product(o)) for o in (owns("C1", "DW400-W"), owns("C2", "DW400-W"))
    ]
    change = dataset.dishwasher_discontinued("disc-1")

    impacts = read(list(discontinuation_impacts(change, "DW400-W", owners)))

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


def test_ids_are_the_rfc_4122_uuids_the_standard_library_makes() -> None:
    for event_id, cid in [("e1", "C1"), ("policy-2027", "C0000042"), ("ñandú", "Ω-7")]:
        name = f"{event_id}\x1f{cid}"
        assert notice_id_for(event_id, cid) == str(uuid.uuid5(NOTICE_NAMESPACE, name))
    fresh = [random_event_id() for _ in range(1000)]
    assert len(set(fresh)) == 1000
    assert all(str(uuid.UUID(f)) == f and uuid.UUID(f).version == 4 for f in fresh)
    assert all(uuid.UUID(f).variant == uuid.RFC_4122 for f in fresh)


def test_a_policy_for_some_regions_reaches_only_their_customers_on_this_partition() -> None:
    change = dataset.warranty_change("pol-1")  # regions ES-CT and ES-AN
    entries = [
        candidate(0, "C1", "ES-CT"),
        candidate(0, "C2", "ES-MD"),
        candidate(1, "C3", "ES-AN"),
    ]

    on_zero = read(list(policy_impacts(change, entries, partition=0)))
    on_one = read(list(policy_impacts(change, entries, partition=1)))

    assert [i.customer_id for i in on_zero] == ["C1"]
    assert [i.customer_id for i in on_one] == ["C3"]
    assert "ES-CT" in on_zero[0].reason
    assert on_zero[0].new_terms == change.new_terms


def test_a_policy_for_all_customers_reaches_everyone() -> None:
    change = dataset.warranty_change().model_copy(update={"scope": PolicyScope(all_customers=True)})
    entries = [candidate(0, f"C{i}", "GB-LND") for i in range(3)]
    assert [i.customer_id for i in read(list(policy_impacts(change, entries, 0)))] == [
        "C0",
        "C1",
        "C2",
    ]


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


def test_every_impact_of_a_fan_out_is_the_contract_it_would_be_if_built_alone() -> None:
    """The first impact is validated; the others are its JSON with their own fields. Each
    must equal the impact built and validated alone for its customer, with its own
    event id, and nothing of another customer's."""
    entries = [candidate(0, f"C{n}", "ES-CT") for n in range(3)]
    scoped = dataset.warranty_change("policy-2").model_copy(
        update={"scope": PolicyScope(regions=["ES-CT"])}
    )
    owners = [(o.customer_id, owned_product(o)) for o in (owns("C1", "X1"), owns("C2", "X1"))]
    gone = dataset.dishwasher_discontinued("disc-2")
    policy = read(list(policy_impacts(scoped, entries, 0)))
    ended = read(list(discontinuation_impacts(gone, "X1", owners)))

    for impacts in (policy, ended):
        assert len({i.event_id for i in impacts}) == len(impacts)
        first = impacts[0]
        for impact in impacts:
            own = {"customer_id", "notice_id", "reason", "scope_region", "products", "event_id"}
            assert impact.model_dump(exclude=own) == first.model_dump(exclude=own)
            name = f"{first.cause_event_id}\x1f{impact.customer_id}"
            assert impact.notice_id == str(uuid.uuid5(NOTICE_NAMESPACE, name))
    for i, cid in zip(policy, ["C0", "C1", "C2"], strict=True):
        assert (i.customer_id, i.scope_region, i.title) == (cid, "ES-CT", scoped.title)
        assert i.reason == "the policy applies to customers in region ES-CT"
        assert (i.policy_id, i.new_terms, i.effective_date) == (
            scoped.policy_id,
            scoped.new_terms,
            scoped.effective_date,
        )
    for i, cid in zip(ended, ["C1", "C2"], strict=True):
        assert i.customer_id == cid
        assert [p.sku for p in i.products] == ["X1"]
        assert i.reason == "owns Product X1 (SKU X1) bought on 2024-05-01, a discontinued model"
        assert i.spare_parts_until == gone.spare_parts_until

    # The last of each, against the impact built and validated alone from the change.
    alone = {
        "policy": Impact(
            kind=ImpactKind.POLICY_CHANGE,
            cause_event_id=scoped.event_id,
            source="preaviso",
            effective_date=scoped.effective_date,
            policy_id=scoped.policy_id,
            policy_kind=scoped.kind,
            title=scoped.title,
            old_terms=scoped.old_terms,
            new_terms=scoped.new_terms,
            required_notice_days=scoped.required_notice_days,
            notice_id=str(uuid.uuid5(NOTICE_NAMESPACE, f"{scoped.event_id}\x1fC2")),
            customer_id="C2",
            reason="the policy applies to customers in region ES-CT",
            scope_region="ES-CT",
        ),
        "discontinuation": Impact(
            kind=ImpactKind.DISCONTINUATION,
            cause_event_id=gone.event_id,
            source="preaviso",
            effective_date=gone.effective_date,
            model_name=gone.model_name,
            last_order_date=gone.last_order_date,
            spare_parts_until=gone.spare_parts_until,
            replacement_offer=gone.replacement_offer,
            notice_id=str(uuid.uuid5(NOTICE_NAMESPACE, f"{gone.event_id}\x1fC2")),
            customer_id="C2",
            reason="owns Product X1 (SKU X1) bought on 2024-05-01, a discontinued model",
            products=[owned_product(owns("C2", "X1"))],
        ),
    }
    chance = {"event_id", "occurred_at"}
    assert policy[-1].model_dump(exclude=chance) == alone["policy"].model_dump(exclude=chance)
    assert ended[-1].model_dump(exclude=chance) == alone["discontinuation"].model_dump(
        exclude=chance
    )


def test_a_candidate_is_read_from_the_entry_as_the_directory_stored_it() -> None:
    entry = DirectoryEntry(partition=3, customer=customer("C7", "ES-CT"))
    assert Candidate.read(encode(entry)) == ("C7", "ES-CT", 3)
