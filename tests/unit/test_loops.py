"""The worker's event loop: uvloop where it can be imported, asyncio's when asked or missing."""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest
from pydantic import ValidationError

from preaviso import loops, settings
from preaviso.settings import EventLoop, Settings


@pytest.fixture
def restore_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop cannot be imported, as on Windows."""
    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> ModuleType:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real(name, package)

    monkeypatch.setattr(loops.importlib, "import_module", import_module)


def loop_made_under(choice: EventLoop) -> str:
    loops.use(choice)

    async def which() -> str:
        return loops.running()

    return asyncio.run(which())


@pytest.mark.usefixtures("restore_policy")
def test_auto_runs_the_worker_on_uvloop_when_it_is_installed() -> None:
    pytest.importorskip("uvloop")
    assert loop_made_under(EventLoop.AUTO) == "uvloop"
    assert loop_made_under(EventLoop.UVLOOP) == "uvloop"


@pytest.mark.usefixtures("restore_policy")
def test_asyncio_when_asked() -> None:
    assert loop_made_under(EventLoop.ASYNCIO) == "asyncio"


@pytest.mark.usefixtures("restore_policy", "no_uvloop")
def test_auto_falls_back_to_asyncio_without_uvloop() -> None:
    assert loop_made_under(EventLoop.AUTO) == "asyncio"
    with pytest.raises(ImportError, match="uvloop"):
        loops.use(EventLoop.UVLOOP)


def test_a_thread_gets_the_chosen_loop_too(restore_policy: None) -> None:
    """Faust's consumer runs in a thread with its own loop: it must follow the choice."""
    pytest.importorskip("uvloop")
    loops.use(EventLoop.AUTO)
    seen: list[str] = []

    async def which() -> None:
        seen.append(loops.running())

    thread = threading.Thread(target=lambda: asyncio.run(which()))
    thread.start()
    thread.join()
    assert seen == ["uvloop"]


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
