"""Local stand-ins for the real parts (broker, mail servers, worker), for tests, demo, bench."""

from __future__ import annotations

import signal

__all__ = ["stop_on_sigterm"]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Make SIGTERM act as Ctrl-C in a command that starts child processes (a broker, a
    mail server, a worker): their context managers then stop them. By default SIGTERM
    ends Python at once, and the children lived on (seen: a benchmark stopped by
    ``timeout`` left its broker and worker running, the worker retrying SMTP)."""
    signal.signal(signal.SIGTERM, _interrupt)
