"""Composite table keys: a group id and a member id joined by a byte no id can hold.

Ids and SKUs are ``Identifier`` (``[A-Za-z0-9][A-Za-z0-9._:-]*``, schemas/base.py),
regions too, and notice ids are UUIDs, so the unit separator (0x1F) never occurs in
one. Hence ``group + SEP`` is a prefix that selects exactly that group's entries
("C1" never picks up "C10"), and as 0x1F sorts below every id character, a prefix
scan returns the members in the order of their ids.
"""

from __future__ import annotations

SEP = b"\x1f"

MARK = b"1"
"""The value of an entry whose key says it all (ledgers, indexes): one byte, not empty,
so it can never be mistaken for a missing value or a tombstone."""


def _checked(part: bytes) -> bytes:
    if not part or SEP in part:
        raise ValueError(f"a key part must be non-empty and free of 0x1F: {part!r}")
    return part


def prefix(group: bytes) -> bytes:
    """The prefix every key of ``group`` starts with, and no other key does."""
    return _checked(group) + SEP


def key(group: bytes, member: bytes) -> bytes:
    """The table key of ``member`` within ``group``."""
    return prefix(group) + _checked(member)


def member(found: bytes, group_prefix: bytes) -> bytes:
    """The member part of a key that a scan of ``group_prefix`` returned."""
    return found[len(group_prefix) :]
