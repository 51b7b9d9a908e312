"""Fixtures shared by unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.unit.smtp_servers import RawServer, Server, start_raw_server, start_server
from tests.unit.stores import STORES, Tables


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's loop; and uvloop too for a test marked ``both_loops`` (the worker runs on
    uvloop, whose transports are not ``asyncio.Transport`` instances)."""
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    if item.get_closest_marker("both_loops") is not None:
        try:
            import uvloop
        except ImportError:  # Windows: the worker runs on asyncio's loop there
            return factories
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(params=STORES)
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> Tables:
    """Empty tables on each kind of store the worker can run with."""
    return Tables(request.param, tmp_path)


@pytest.fixture(params=[False, True], ids=["one-command-at-a-time", "pipelining"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """An in-test SMTP server (aiosmtpd) that records what it gets; every test that uses
    it runs once against a server without PIPELINING and once with it."""
    handler = Server(pipelining=request.param)
    listener = await start_server(handler)
    yield handler
    listener.close()
    for session in handler.sessions:
        if session.transport is not None:
            session.transport.close()


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    """A hand-written SMTP server showing how the client sends (``smtp_servers.RawServer``)."""
    handler = RawServer()
    listener = await start_raw_server(handler)
    yield handler
    listener.close()
