"""Fixtures shared by unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.smtp_servers import Server, start_server
from tests.unit.stores import STORES, Tables


@pytest.fixture(params=STORES)
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> Tables:
    """Empty tables on each kind of store the worker can run with."""
    return Tables(request.param, tmp_path)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """An in-test SMTP server (aiosmtpd) that records what it gets."""
    handler = Server()
    listener = await start_server(handler)
    yield handler
    listener.close()
    for session in handler.sessions:
        if session.transport is not None:
            session.transport.close()
