"""aiosmtplib's client, sending a message already in SMTP's canonical form as it is.

``aiosmtplib.SMTP.sendmail`` passes every message through regular expressions three
times: its line endings are normalized to size the SIZE option and again for DATA,
then it is dot-stuffed. For a 4 KB notice that is ~60 µs, the largest single cost of
a mail in the worker (docs/benchmarks.md). Notices are built with CRLF line endings
only (``mail/message.py``), so those passes change nothing but the dots.
``Client.send_canonical`` runs the same transaction with aiosmtplib's own MAIL, RCPT
and command methods, and writes DATA dot-stuffed by one ``bytes.replace``. A message
that is not canonical goes through ``sendmail`` as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

__all__ = ["Client", "canonical", "dot_stuffed"]


def canonical(message: bytes) -> bool:
    """True if every line break is CRLF (no bare CR or LF): aiosmtplib's normalization
    would at most add a CRLF at the end."""
    lines = message.count(b"\r\n")
    return message.count(b"\n") == lines and message.count(b"\r") == lines


def dot_stuffed(message: bytes) -> bytes:
    """A canonical message with a dot doubled at the start of every line (RFC 5321
    4.5.2), so no line of it can end DATA."""
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..")


class Client(aiosmtplib.SMTP):
    """``aiosmtplib.SMTP`` plus ``send_canonical``."""

    async def send_canonical(
        self, sender: str, recipients: Sequence[str], message: bytes
    ) -> tuple[dict[str, SMTPResponse], str]:
        """``sendmail(sender, recipients, message)`` for a ``canonical`` message: the same
        commands and replies, the same exceptions, the same RSET after a refusal."""
        if not message.endswith(b"\r\n"):
            message += b"\r\n"  # DATA ends with a line break, as sendmail makes sure
        await self._greeted()  # the SIZE extension is known only after EHLO
        options = [f"size={len(message)}"] if self.supports_extension("size") else []
        try:
            await self.mail(sender, options=options)
            refused: list[SMTPRecipientRefused] = []
            for recipient in recipients:
                try:
                    await self.rcpt(recipient)
                except SMTPRecipientRefused as exc:
                    refused.append(exc)
            if len(refused) == len(recipients):
                raise SMTPRecipientsRefused(refused)
            reply = await self._data(message)
        except (SMTPResponseException, SMTPRecipientsRefused):
            with suppress(ConnectionError, SMTPResponseException):
                await self.rset()  # as sendmail does: the next transaction starts clean
            raise
        return {e.recipient: SMTPResponse(e.code, e.message) for e in refused}, reply.message

    async def _greeted(self) -> None:
        """EHLO, or HELO if the server refuses it, once per connection (as sendmail)."""
        if self.is_ehlo_or_helo_needed:
            try:
                await self.ehlo()
            except SMTPHeloError:
                if not self.is_connected:
                    raise
                await self.helo()

    async def _data(self, message: bytes) -> SMTPResponse:
        start = await self.execute_command(b"DATA")
        if start.code != SMTPStatus.start_input:
            raise SMTPDataError(start.code, start.message)
        protocol = self.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        try:
            # read_response marks the reply as expected before it waits; nothing can
            # arrive between the write and that mark (no await between them).
            protocol.write(dot_stuffed(message) + b".\r\n")
            reply = await protocol.read_response(timeout=self.timeout)
        except (SMTPServerDisconnected, SMTPTimeoutError):
            self.close()
            raise
        if reply.code != SMTPStatus.completed:
            raise SMTPDataError(reply.code, reply.message)
        return reply
