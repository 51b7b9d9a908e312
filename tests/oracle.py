"""Who must hear of a change, worked out apart from the code under test.

A deliberately tiny reference for the reliability tests: it reads the directory and
the change as plain JSON dicts (what the publisher sends) and follows the rules of the
README, not ``preaviso.audience``. If the two ever disagree, one of them is wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

Record = Mapping[str, Any]

# The documented contract (docs/architecture.md, "Deterministic ids"): the notice a
# change owes a customer is uuid5(namespace, event_id + US + customer_id), and its
# Message-ID is <notice_id@PREAVISO_MESSAGE_ID_DOMAIN>. Pinned here on purpose: a
# change to it would re-send every notice already sent under the old ids.
NOTICE_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4d57-9a43-7e1c2b9d0a11")


def latest_customers(customers: Iterable[Record]) -> dict[str, Record]:
    """The directory: one entry per customer_id, the newest ``occurred_at`` wins."""
    directory: dict[str, Record] = {}
    for customer in customers:
        held = directory.get(customer["customer_id"])
        if held is None or str(customer.get("occurred_at", "")) >= str(held.get("occurred_at", "")):
            directory[customer["customer_id"]] = customer
    return directory


def affected(customers: Iterable[Record], ownerships: Iterable[Record], change: Record) -> set[str]:
    """The customer_ids a change must reach (known customers only)."""
    directory = latest_customers(customers)
    if change["type"] == "PolicyChanged":
        scope = change["scope"]
        if scope.get("all_customers"):
            return set(directory)
        regions = set(scope.get("regions") or [])
        return {cid for cid, c in directory.items() if c["region"] in regions}
    if change["type"] == "ProductDiscontinued":
        skus = set(change["skus"])
        return {o["customer_id"] for o in ownerships if o["sku"] in skus} & set(directory)
    raise ValueError(f"not a change: {change['type']!r}")


def message_id(event_id: str, customer_id: str, domain: str) -> str:
    """The Message-ID (without angle brackets) of the notice ``event_id`` owes a customer."""
    notice = uuid.uuid5(NOTICE_NAMESPACE, f"{event_id}\x1f{customer_id}")
    return f"{notice}@{domain}"


def expected_mails(
    customers: Iterable[Record], ownerships: Iterable[Record], change: Record, domain: str
) -> dict[str, str]:
    """Message-ID -> customer_id of every mail the change must produce, exactly once each."""
    return {
        message_id(change["event_id"], cid, domain): cid
        for cid in sorted(affected(customers, ownerships, change))
    }
