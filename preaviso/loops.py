"""The worker's event loop: uvloop where it is installed, asyncio's own otherwise.

Every stage's work is a chain of small callbacks (a record handed over, an SMTP reply,
a produce acknowledged), so the loop's own cost per callback is a large part of a
notice's. uvloop's is lower: measured on the quick benchmark, 10-15% more mails per
second from the same worker (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import importlib

from preaviso.settings import EventLoop


def policy(choice: EventLoop) -> asyncio.AbstractEventLoopPolicy:
    """The policy for ``choice``; ``auto`` is uvloop's if it can be imported.

    An explicit ``uvloop`` that cannot be imported raises ``ImportError`` (the settings
    refuse it earlier, with a hint, when it is not installed at all).
    """
    if choice is EventLoop.ASYNCIO:
        return asyncio.DefaultEventLoopPolicy()
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice is EventLoop.UVLOOP:
            raise
        return asyncio.DefaultEventLoopPolicy()
    loop_policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    return loop_policy


def use(choice: EventLoop) -> None:
    """Make ``choice`` the policy of every loop made from now on, in every thread (Faust's
    consumer runs its own)."""
    asyncio.set_event_loop_policy(policy(choice))


def running() -> str:
    """``uvloop`` or ``asyncio``: the loop this code runs on, as the worker logs it."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.split(".")[0] == "uvloop" else "asyncio"
