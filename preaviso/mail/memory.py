"""An in-memory transport for tests of the stages that send: no server, the same exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from preaviso.mail.errors import (
    SmtpReplyError,
    SmtpUnreachableError,
    TransportError,
)
from preaviso.mail.transport import ClosingContext, SmtpReply, check_envelope

__all__ = ["MemoryTransport", "SentMessage"]


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One message ``MemoryTransport`` accepted."""

    sender: str
    recipients: tuple[str, ...]
    message: bytes


@dataclass(slots=True)
class _Failure:
    code: int
    reply: str
    times: int | None


class MemoryTransport(ClosingContext):
    """Keeps what it is sent in ``sent``; ``fail()`` makes it refuse chosen recipients.

    For tests of the stages that send: no server, same exceptions as ``SmtpTransport``.
    A message with any refused recipient is refused whole (nothing is recorded).
    """

    def __init__(self) -> None:
        self.sent: list[SentMessage] = []
        self.unreachable = False
        """Set to make ``send`` and ``check`` raise ``SmtpUnreachableError``."""
        self.closed = False
        self._failures: dict[str, _Failure] = {}

    def fail(
        self,
        recipient: str,
        code: int = 550,
        reply: str = "5.1.1 Mailbox unavailable",
        *,
        times: int | None = None,
    ) -> None:
        """Refuse ``recipient`` with ``code``; only the next ``times`` sends, if given.

        ``times`` lets a test model a passing 4xx: refused once, accepted on retry.
        """
        if not 400 <= code < 600:
            raise ValueError(f"a refusal needs a 4xx or 5xx code, not {code}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        self._failures[recipient.lower()] = _Failure(code, reply, times)

    def recover(self, recipient: str | None = None) -> None:
        """Stop refusing ``recipient`` (all recipients if ``None``)."""
        if recipient is None:
            self._failures.clear()
        else:
            self._failures.pop(recipient.lower(), None)

    async def send(self, sender: str, recipients: Sequence[str], message: bytes) -> SmtpReply:
        rcpts = check_envelope(sender, recipients)
        await asyncio.sleep(0)  # a real send yields to the loop; so do we
        if self.closed:
            raise TransportError("the memory transport is closed")
        if self.unreachable:
            raise SmtpUnreachableError("memory", 0, "the test made it unreachable")
        for recipient in rcpts:
            failure = self._failures.get(recipient.lower())
            if failure is None:
                continue
            if failure.times is not None:
                failure.times -= 1
                if failure.times == 0:
                    del self._failures[recipient.lower()]
            raise SmtpReplyError.from_reply(
                failure.code, failure.reply, command="RCPT", recipient=recipient
            )
        self.sent.append(SentMessage(sender, tuple(rcpts), message))
        return SmtpReply(250, f"2.0.0 Ok: queued as {len(self.sent)}")

    async def check(self) -> None:
        if self.unreachable:
            raise SmtpUnreachableError("memory", 0, "the test made it unreachable")

    async def aclose(self) -> None:
        self.closed = True
