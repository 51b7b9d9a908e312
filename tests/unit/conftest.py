"""Fixtures shared by unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.stores import STORES, Tables


@pytest.fixture(params=STORES)
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> Tables:
    """Empty tables on each kind of store the worker can run with."""
    return Tables(request.param, tmp_path)
