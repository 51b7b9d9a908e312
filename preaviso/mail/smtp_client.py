"""aiosmtplib's client, sending a message already in SMTP's canonical form as it is.

``aiosmtplib.SMTP.sendmail`` passes every message through regular expressions three
times: its line endings are normalized to size the SIZE option and again for DATA,
then it is dot-stuffed. For a 4 KB notice that is ~60 µs, the largest single cost of
a mail in the worker (docs/benchmarks.md). Notices are built with CRLF line endings
only (``mail/message.py``), so those passes change nothing but the dots.
``Client.send_canonical`` runs the same transaction with aiosmtplib's own MAIL, RCPT
and command methods, and writes DATA dot-stuffed by one ``bytes.replace``. A message
that is not canonical goes through ``sendmail`` as before.

When the server offers PIPELINING (RFC 2920; Postfix, Exim, Gmail and the big relays
do), MAIL, RCPT and DATA go out in one write and their replies are read together: two
round trips a mail instead of four. When it also offers CHUNKING (RFC 3030; Postfix
3.4+, Gmail, Exchange), the message goes in that same write as one ``BDAT n LAST``
chunk, undotted: one round trip. Then a connection also carries ``OVERLAP`` mails at
once: a group may go out before the one ahead of it is answered (a BDAT chunk says its
own length, so nothing can be read as another mail's text). Each such group starts
with RSET, so it never depends on how the one before it ended. aiosmtplib reads one
reply per command and drops bytes that come after it, so while groups' replies come
back a small protocol of our own (``_Pipe``) stands in for aiosmtplib's on the
transport (``set_protocol``) and hands each group its replies in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPHeloError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)
from aiosmtplib.email import quote_address

from preaviso.mail.message import plain_address

__all__ = [
    "OVERLAP",
    "OVERLAP_MAX_CONNECTIONS",
    "Client",
    "canonical",
    "dot_stuffed",
    "envelope_address",
    "overlap",
]

OVERLAP = 2
"""Mails one connection carries at once when the server offers PIPELINING and CHUNKING:
the next one goes while the last one's answer is on its way (+5.8% mails/s at 4
connections in six interleaved pairs, docs/benchmarks.md, stop 24)."""
OVERLAP_MAX_CONNECTIONS = 12
"""Past this many connections, one mail each: they keep enough mails in flight alone,
and deliver's window could no longer give the second mail its place (at 16, two a
connection were ~6% slower in two pairs, the window smaller)."""

REPLY_MAX = 64 * 1024
"""Bytes of replies to one pipelined group at most; more is not an SMTP server talking."""


def overlap(connections: int, pipelining: bool) -> int:
    """Mails each of ``connections`` may carry at once, if its server allows it."""
    return OVERLAP if pipelining and connections <= OVERLAP_MAX_CONNECTIONS else 1


def canonical(message: bytes) -> bool:
    """True if every line break is CRLF (no bare CR or LF): aiosmtplib's normalization
    would at most add a CRLF at the end."""
    lines = message.count(b"\r\n")
    return message.count(b"\n") == lines and message.count(b"\r") == lines


def envelope_address(address: str) -> bytes:
    """``<address>`` for MAIL FROM or RCPT TO, as aiosmtplib's ``quote_address`` makes it.

    A plain ``local@domain`` (every address the transport lets through) is that already;
    ``quote_address`` parses it with ``email.utils`` all the same, ~15 µs a mail.
    """
    if plain_address(address):
        return b"<" + address.encode("ascii") + b">"
    return quote_address(address).encode("ascii")


def dot_stuffed(message: bytes) -> bytes:
    """A canonical message with a dot doubled at the start of every line (RFC 5321
    4.5.2), so no line of it can end DATA."""
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..")


class Client(aiosmtplib.SMTP):
    """``aiosmtplib.SMTP`` plus ``send_canonical``; ``pipelining=False`` never pipelines,
    ``overlap`` is how many mails its pool may put on it at once (``overlap()``)."""

    def __init__(
        self,
        *args: Any,
        pipelining: bool = True,
        overlap: int = 1,
        data_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pipelining = pipelining
        self.overlap = overlap
        self.turn = asyncio.Lock()
        """Held to open the connection, and for a whole mail while mails may not overlap."""
        self.shared = False
        """True once the pool lets ``overlap`` mails take this connection at once."""
        self.opened_as: object | None = None
        """The protocol of the connection the pool last finished opening."""
        self.data_timeout = data_timeout
        """Seconds for the reply once the whole message is sent (None: the command timeout)."""
        self.message_sent = False
        """True once this transaction's message was written: from then on, a timeout or a
        dropped connection leaves unknown whether the server kept it. With overlapping
        mails, each one's ``_group`` sets it as it ends, and its caller reads it before
        any ``await``: no other mail's outcome can come in between."""

    @property
    def ready(self) -> bool:
        """Open, and through its greeting, STARTTLS and AUTH (the pool's ``_connect``)."""
        return self.is_connected and self.protocol is self.opened_as

    @property
    def overlapping(self) -> bool:
        """True once EHLO showed PIPELINING and CHUNKING, where the pool may put ``overlap``
        mails on it at once (not past ``OVERLAP_MAX_CONNECTIONS``)."""
        return (
            self.overlap > 1
            and self.pipelining
            and self.supports_extension("pipelining")
            and self.supports_extension("chunking")
        )

    async def greet(self) -> None:
        """EHLO, or HELO if the server refuses it, once per connection (as sendmail)."""
        if self.is_ehlo_or_helo_needed:
            try:
                await self.ehlo()
            except SMTPHeloError:
                if not self.is_connected:
                    raise
                await self.helo()

    async def send_canonical(
        self, sender: str, recipients: Sequence[str], message: bytes
    ) -> tuple[dict[str, SMTPResponse], str]:
        """``sendmail(sender, recipients, message)`` for a ``canonical`` message: the same
        commands and replies, the same exceptions, the same RSET after a refusal."""
        self.message_sent = False
        if not message.endswith(b"\r\n"):
            message += b"\r\n"  # DATA ends with a line break, as sendmail makes sure
        await self.greet()  # the SIZE extension is known only after EHLO
        options = [f"size={len(message)}"] if self.supports_extension("size") else []
        pipelining = self.pipelining and self.supports_extension("pipelining")
        try:
            if pipelining:
                refused, reply = await self._pipelined(sender, recipients, message, options)
            else:
                refused, reply = await self._one_at_a_time(sender, recipients, message, options)
        except (SMTPResponseException, SMTPRecipientsRefused):
            if not self.overlapping:  # there, the next group starts with its own RSET
                with suppress(ConnectionError, SMTPResponseException):
                    await self.rset()  # as sendmail does: the next transaction starts clean
            raise
        return {e.recipient: SMTPResponse(e.code, e.message) for e in refused}, reply.message

    async def _one_at_a_time(
        self, sender: str, recipients: Sequence[str], message: bytes, options: list[str]
    ) -> tuple[list[SMTPRecipientRefused], SMTPResponse]:
        """MAIL, each RCPT, DATA and the message, each after the reply to the one before:
        the recipients refused, and the reply to the message."""
        await self.mail(sender, options=options)
        refused: list[SMTPRecipientRefused] = []
        for recipient in recipients:
            try:
                await self.rcpt(recipient)
            except SMTPRecipientRefused as exc:
                refused.append(exc)
        if len(refused) == len(recipients):
            raise SMTPRecipientsRefused(refused)
        return refused, await self._data(message)

    async def _data(self, message: bytes) -> SMTPResponse:
        start = await self.execute_command(b"DATA")
        if start.code != SMTPStatus.start_input:
            raise SMTPDataError(start.code, start.message)
        return await self._end_data(message)

    async def _end_data(self, message: bytes) -> SMTPResponse:
        """After the server's 354: the message, dot-stuffed, and the dot that ends it."""
        protocol = self.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        try:
            # read_response marks the reply as expected before it waits; nothing can
            # arrive between the write and that mark (no await between them).
            protocol.write(dot_stuffed(message) + b".\r\n")
            self.message_sent = bool(message)
            reply = await protocol.read_response(timeout=self._reply_timeout(bool(message)))
        except (SMTPServerDisconnected, SMTPTimeoutError):
            self.close()
            raise
        except SMTPResponseException:  # not an SMTP reply: where the server is, is unknown
            self.close()
            raise
        if reply.code != SMTPStatus.completed:
            raise SMTPDataError(reply.code, reply.message)
        return reply

    async def _pipelined(
        self, sender: str, recipients: Sequence[str], message: bytes, options: list[str]
    ) -> tuple[list[SMTPRecipientRefused], SMTPResponse]:
        """MAIL, every RCPT and DATA in one write (RFC 2920); when the server also offers
        CHUNKING (RFC 3030), BDAT and the message itself go in that write too, instead of
        DATA: one round trip a mail. The same outcome as ``_one_at_a_time``."""
        mail = b" ".join([b"MAIL FROM:" + envelope_address(sender)] + [
            o.encode("ascii") for o in options
        ])  # fmt: skip
        rcpts = [b"RCPT TO:" + envelope_address(r) for r in recipients]
        chunking = self.supports_extension("chunking")
        last = b"BDAT %d LAST" % len(message) if chunking else b"DATA"
        reset = [b"RSET"] if self.overlapping else []  # whatever the mail before left open
        replies = await self._group([*reset, mail, *rcpts, last], message if chunking else b"")
        mailed, accepted, started = replies[len(reset)], replies[len(reset) + 1 : -1], replies[-1]
        refused = [
            SMTPRecipientRefused(reply.code, reply.message, recipient)
            for recipient, reply in zip(recipients, accepted, strict=True)
            if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward)
        ]
        if started.code == SMTPStatus.start_input and (
            mailed.code != SMTPStatus.completed or len(refused) == len(recipients)
        ):  # DATA taken with nothing to send: end it empty (RFC 2920 3.1)
            with suppress(SMTPDataError):
                await self._end_data(b"")
        if mailed.code != SMTPStatus.completed:
            raise SMTPSenderRefused(mailed.code, mailed.message, sender)
        if len(refused) == len(recipients):
            raise SMTPRecipientsRefused(refused)
        if chunking:  # BDAT's reply is the message's
            if started.code != SMTPStatus.completed:
                raise SMTPDataError(started.code, started.message)
            return refused, started
        if started.code != SMTPStatus.start_input:
            raise SMTPDataError(started.code, started.message)
        return refused, await self._end_data(message)

    async def _group(self, commands: list[bytes], chunk: bytes = b"") -> list[SMTPResponse]:
        """Write ``commands`` (and a BDAT's ``chunk`` after them) at once; their replies,
        which come after those of any group written before it on this connection."""
        protocol = self.protocol
        # Not isinstance(asyncio.Transport): uvloop's transports do not derive from it.
        transport: Any = protocol.transport if protocol is not None else None
        if transport is None or transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        pipe = transport.get_protocol()
        if not isinstance(pipe, _Pipe):
            pipe = _Pipe(protocol)
            transport.set_protocol(pipe)
        ahead = pipe.unanswered()
        replies = pipe.expect(len(commands))
        before_chunk = len(commands) - 1  # all but the last: they answer at once
        try:
            transport.write(b"\r\n".join(commands) + b"\r\n" + chunk)
            if ahead is not None:  # its answers come first: this group's time starts after
                await asyncio.wait((ahead,))
            if chunk and self._reply_timeout(True) != self.timeout:
                await asyncio.wait_for(replies.reached(before_chunk), self.timeout)
            await asyncio.wait_for(replies.done, self._reply_timeout(bool(chunk)))
        except TimeoutError as exc:
            self.close()
            raise SMTPReadTimeoutError("Timed out waiting for server response") from exc
        except (SMTPServerDisconnected, SMTPResponseException):  # lost, or not SMTP replies
            self.close()
            raise
        finally:
            if pipe.idle and transport.get_protocol() is pipe:
                transport.set_protocol(protocol)
            # The chunk is in the server's hands once it answered what came before it,
            # or once it went behind another mail: the server reads on past that one.
            answered = len(replies.replies) >= before_chunk
            self.message_sent = bool(chunk) and (ahead is not None or answered)
        return replies.replies

    def _reply_timeout(self, after_message: bool) -> float | None:
        """RFC 5321 4.5.3.2.6: a server may take 10 minutes to answer a message it is
        keeping (filters, a slow queue); asking again sooner would send it twice."""
        return self.data_timeout if after_message and self.data_timeout else self.timeout


class _Replies:
    """The replies to one group, as they come."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.replies: list[SMTPResponse] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count = expected
        self._reached: asyncio.Future[None] | None = None

    def reached(self, count: int) -> asyncio.Future[None]:
        """A future done once ``count`` replies are in (or failed with what ends the group)."""
        self._count = count
        self._reached = asyncio.get_running_loop().create_future()
        if len(self.replies) >= count:
            self._reached.set_result(None)
        return self._reached

    def add(self, reply: SMTPResponse) -> None:
        self.replies.append(reply)
        if len(self.replies) == self._count and self._reached and not self._reached.done():
            self._reached.set_result(None)
        if len(self.replies) == self.expected and not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
            self.done.exception()  # retrieved: a group waiting for ``reached`` raises that
        if self._reached is not None and not self._reached.done():
            self._reached.set_exception(exc)
            self._reached.exception()  # retrieved: it is awaited only with a data timeout


class _Pipe(asyncio.Protocol):
    """On the transport while groups' replies come back, then gone again.

    Hands each group written its replies, in the order the groups went; everything else
    a protocol hears (the connection lost, flow control) goes on to aiosmtplib's, so its
    state stays right.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._buffer = bytearray()
        self._waiting: deque[_Replies] = deque()

    @property
    def idle(self) -> bool:
        return not self._waiting

    def unanswered(self) -> asyncio.Future[None] | None:
        """The last group written and not yet answered: the next one's answers follow it."""
        return self._waiting[-1].done if self._waiting else None

    def expect(self, count: int) -> _Replies:
        replies = _Replies(count)
        self._waiting.append(replies)
        return replies

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while self._waiting:
                reply = _reply(self._buffer)
                if reply is None:
                    if len(self._buffer) > REPLY_MAX:
                        raise SMTPResponseException(SMTPStatus.invalid_response, "Reply too long")
                    return
                group = self._waiting[0]
                group.add(reply)
                if len(group.replies) == group.expected:
                    self._waiting.popleft()
        except SMTPResponseException as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(SMTPServerDisconnected("Connection lost"))
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _fail(self, exc: Exception) -> None:
        while self._waiting:
            self._waiting.popleft().fail(exc)


def _reply(buffer: bytearray) -> SMTPResponse | None:
    """Take one complete reply (``250-...`` lines, then ``250 ...``) off ``buffer``."""
    lines: list[bytes] = []
    start = 0
    while (end := buffer.find(b"\n", start)) >= 0:
        line = bytes(buffer[start : end + 1])
        start = end + 1
        if not line[:3].isdigit():
            raise SMTPResponseException(SMTPStatus.invalid_response, "Malformed SMTP response line")
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            del buffer[:start]
            text = b"\n".join(lines).decode("utf-8", "surrogateescape")
            return SMTPResponse(int(line[:3]), text)
    return None
