"""Per-customer sets of notice ids kept in a table: the dedup memory of a stage."""

from __future__ import annotations

from typing import Any


def contains(table: Any, customer_key: bytes, notice_id: str) -> bool:
    raw: bytes | None = table.get(customer_key)
    return raw is not None and notice_id.encode() in raw.split(b"\n")


def add(table: Any, customer_key: bytes, notice_id: str) -> None:
    raw: bytes | None = table.get(customer_key)
    table[customer_key] = notice_id.encode() if not raw else raw + b"\n" + notice_id.encode()
