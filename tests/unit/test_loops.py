"""The worker's event loop: uvloop where it can be used, asyncio's when asked or missing."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator

import pytest
from mode.threads import ServiceThread
from pydantic import ValidationError

from preaviso import loops, settings
from preaviso.loops import EventLoopUnavailableError
from preaviso.settings import EventLoop, Settings

pytestmark = pytest.mark.usefixtures("restore_policy")


@pytest.fixture
def restore_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


@pytest.fixture
def uvloop_installed() -> None:
    pytest.importorskip("uvloop")


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop cannot be imported, as on Windows (None in sys.modules fails the import)."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


def loop_made_under(choice: EventLoop) -> str:
    """The module of the loop asyncio makes once ``choice`` is in use."""
    loops.use(choice)
    loop = asyncio.new_event_loop()
    try:
        return type(loop).__module__
    finally:
        loop.close()


@pytest.mark.usefixtures("uvloop_installed")
def test_auto_and_uvloop_make_uvloop_loops() -> None:
    assert loop_made_under(EventLoop.AUTO) == "uvloop"
    assert loop_made_under(EventLoop.UVLOOP) == "uvloop"
    assert loops.use(EventLoop.AUTO) == "uvloop"


def test_asyncio_when_asked() -> None:
    assert loop_made_under(EventLoop.ASYNCIO).startswith("asyncio.")
    assert loops.use(EventLoop.ASYNCIO) == "asyncio"


@pytest.mark.usefixtures("uvloop_installed")
def test_fausts_consumer_thread_gets_the_chosen_loop_too() -> None:
    """Faust's consumer runs in a mode ``ServiceThread``, whose loop is made in the parent
    thread when the service is built: it must be a uvloop loop as well."""
    loops.use(EventLoop.AUTO)
    asyncio.set_event_loop(asyncio.new_event_loop())  # the worker's own (mode asks for it)
    thread = ServiceThread()
    try:
        assert type(thread.thread_loop).__module__ == "uvloop"
    finally:
        thread.thread_loop.close()
        asyncio.get_event_loop().close()
        asyncio.set_event_loop(None)


@pytest.mark.usefixtures("no_uvloop")
def test_auto_falls_back_to_asyncio_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="preaviso.loops"):
        assert loop_made_under(EventLoop.AUTO).startswith("asyncio.")
    assert "uvloop cannot be used" in caplog.text


@pytest.mark.usefixtures("no_uvloop")
def test_an_explicit_uvloop_that_cannot_be_used_says_what_to_do() -> None:
    with pytest.raises(EventLoopUnavailableError, match=r"PREAVISO_EVENT_LOOP is uvloop.*set auto"):
        loops.use(EventLoop.UVLOOP)


def test_settings_refuse_uvloop_where_it_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "find_spec", lambda name: None)
    with pytest.raises(ValidationError, match="PREAVISO_EVENT_LOOP is uvloop, but uvloop is not"):
        Settings(event_loop="uvloop")
    assert Settings(event_loop="auto").event_loop is EventLoop.AUTO


def test_settings_name_the_loops_they_accept() -> None:
    with pytest.raises(ValidationError, match="'auto', 'uvloop' or 'asyncio'"):
        Settings(event_loop="trio")
