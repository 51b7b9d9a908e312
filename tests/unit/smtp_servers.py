"""An in-test SMTP server and the message it is sent, shared by the transport tests."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP

from preaviso.devtools.catcher import ehlo_lines
from preaviso.mail import SmtpTransport

SENDER = "avisos@example.com"
MESSAGE = (
    b"From: avisos@example.com\r\nTo: jose@example.com\r\nSubject: hola\r\n\r\n"
    b"Hola.\r\n.a line starting with a dot\r\n.\r\n..\r\nFin.\r\n"
)


@dataclass
class Server:
    """An aiosmtpd server in the test's loop that records what it gets and misbehaves on cue."""

    port: int = 0
    connections: int = 0
    messages: list[bytes] = field(default_factory=list)
    sessions: list[SMTP] = field(default_factory=list)
    drop_on_mail: bool = False
    """Close the connection at MAIL: the message never comes."""
    drop_on_data: bool = False
    """Close the connection once the whole message came, without an answer."""
    data_delay: float = 0.0
    mail_delay: float = 0.0
    mail_reply: str | None = None
    """Answer MAIL with this instead of 250."""
    pipelining: bool = False
    """Offer PIPELINING (aiosmtpd serves it, reading one command after another)."""

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        return ehlo_lines(session, hostname, responses, pipelining=self.pipelining)

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.drop_on_mail:
            return _hang_up(server)
        if self.mail_delay:
            await asyncio.sleep(self.mail_delay)
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("gone"):
            return "550 5.1.1 No such user"
        if address.startswith("busy"):
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.drop_on_data:
            return _hang_up(server)
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if b"REJECT-ME" in envelope.original_content:
            return "554 5.7.1 Message rejected"
        self.messages.append(envelope.original_content)
        return f"250 2.0.0 Ok: queued as {len(self.messages)}"


def _hang_up(server: SMTP) -> str:
    """Close the connection; the reply returned is never read."""
    assert server.transport is not None
    server.transport.close()
    return "421 closing"


async def start_server(handler: Server, **smtp_options: Any) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    ssl_context = smtp_options.pop("ssl", None)

    def protocol() -> SMTP:
        handler.connections += 1
        session = SMTP(handler, hostname="test.invalid", loop=loop, **smtp_options)
        handler.sessions.append(session)
        return session

    server = await loop.create_server(protocol, "127.0.0.1", 0, ssl=ssl_context)
    handler.port = server.sockets[0].getsockname()[1]
    return server


def transport_for(server: Server, **options: Any) -> SmtpTransport:
    return SmtpTransport(host="127.0.0.1", port=server.port, local_hostname="client", **options)


@dataclass
class RawServer:
    """A hand-written SMTP server that shows how a client sends its commands.

    ``command_reads`` lists the commands each read held. ``strict`` answers a mail's
    commands only once the whole group has come (MAIL to DATA, or to a BDAT and its
    chunk): a client that waits for MAIL's reply before it sends RCPT gets no answer.
    ``in_pairs`` answers chunked mails two at a time: a client that waits for one
    mail's answer before it sends the next gets none. Like Postfix, it refuses a MAIL
    while a transaction is open (one not ended by RSET or an accepted last chunk).
    The other options misbehave.
    """

    offer_pipelining: bool = True
    offer_chunking: bool = False
    strict: bool = False
    in_pairs: bool = False
    rcpt_reply: bytes = b"250 2.1.5 Ok\r\n"
    data_reply: bytes = b"354 Go ahead\r\n"
    bdat_reply: bytes = b"250 2.0.0 Ok: queued\r\n"
    byte_by_byte: bool = False
    """Send each group's replies one byte per write."""
    silent: bool = False
    """Never answer a group."""
    drop_on_group: bool = False
    """Close the connection once a group has come, without answering."""
    drop_on_chunk: bool = False
    """Once: answer a chunked mail's commands, not its chunk, and close the connection a
    moment later, recording what else came meanwhile."""
    garbled: bool = False
    """Answer a group with a line that is not an SMTP reply."""
    port: int = 0
    _open: bool = False  # a MAIL not yet ended
    _recipients: int = 0  # recipients accepted in the open transaction
    command_reads: list[list[bytes]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw ESMTP\r\n")
        pending, held, mails_held = b"", b"", 0
        self._open, self._recipients = False, 0
        while chunk := await reader.read(65536):
            pending += chunk
            if self.strict and pending.startswith((b"MAIL", b"RSET")) and not _whole_group(pending):
                continue  # the rest of the group is still to come
            verbs, out, pending = await self._commands(pending, reader)
            self.command_reads.append(verbs)
            if self.in_pairs and b"BDAT" in verbs:
                held, mails_held = held + out, mails_held + verbs.count(b"BDAT")
                if mails_held < 2:
                    continue  # this mail's answer waits for the next mail
                out, held, mails_held = held, b"", 0
            if b"MAIL" in verbs and self.garbled:
                writer.write(b"hello there\r\n")
                continue
            if b"MAIL" in verbs and (self.silent or self.drop_on_group):
                if self.drop_on_group:
                    writer.close()
                    return
                continue
            if self.drop_on_chunk and b"BDAT" in verbs:
                self.drop_on_chunk = False
                await asyncio.sleep(0.2)  # what the client sends meanwhile waits unread
                with suppress(TimeoutError):
                    pending += await asyncio.wait_for(reader.read(65536), 0.2)
                self.command_reads.append(_verbs(pending))
                writer.write(out)
                writer.close()
                return
            await self._send(writer, out)
            if b"DATA" in verbs and self.data_reply.startswith(b"354"):
                body, pending = await _read_until_end(pending, reader)
                self._open = False  # DATA ends the transaction, taken or not
                if body == b".\r\n":  # an empty message: nobody to send it to
                    writer.write(b"554 5.5.1 No valid recipients\r\n")
                    continue
                self.messages.append(body)
                writer.write(b"250 2.0.0 Ok: queued\r\n")
            if b"QUIT" in verbs:
                writer.close()
                return

    async def _commands(
        self, pending: bytes, reader: asyncio.StreamReader
    ) -> tuple[list[bytes], bytes, bytes]:
        """The whole command lines in ``pending`` (a BDAT with its chunk): their verbs, the
        replies, and what is left."""
        verbs: list[bytes] = []
        out = b""
        while (eol := pending.find(b"\r\n")) >= 0:
            line, pending = pending[:eol], pending[eol + 2 :]
            verb = line[:4].upper()
            verbs.append(verb)
            if verb == b"BDAT":
                size = int(line.split()[1])
                while len(pending) < size:
                    pending += await _more(reader)
                body, pending = pending[:size], pending[size:]
                if self.drop_on_chunk:
                    return verbs, out, pending  # its answer, and any other, never comes
                if not self._recipients:
                    out += b"554 5.5.1 No valid recipients\r\n"
                else:
                    out += self.bdat_reply
                    if self.bdat_reply.startswith(b"250"):
                        self.messages.append(body)
                        self._open = False
                continue
            if verb == b"MAIL" and self._open:
                out += b"503 5.5.1 Error: nested MAIL command\r\n"
                continue
            if verb in (b"MAIL", b"RSET"):
                self._open, self._recipients = verb == b"MAIL", 0
            if verb == b"RCPT":
                reply = b"451 4.3.0 Try again later\r\n" if b"busy" in line else self.rcpt_reply
                self._recipients += reply.startswith(b"250")
                out += reply
                continue
            out += self._reply(verb)
            if verb == b"DATA":
                break  # the message comes after the 354
        return verbs, out, pending

    def _reply(self, verb: bytes) -> bytes:
        if verb == b"EHLO":
            return (
                b"250-raw\r\n"
                + (b"250-PIPELINING\r\n" if self.offer_pipelining else b"")
                + (b"250-CHUNKING\r\n" if self.offer_chunking else b"")
                + b"250 SIZE 1000000\r\n"
            )
        if verb == b"RCPT":
            return self.rcpt_reply
        if verb == b"DATA":
            return self.data_reply
        return b"250 2.0.0 Ok\r\n"

    async def _send(self, writer: asyncio.StreamWriter, out: bytes) -> None:
        if not self.byte_by_byte:
            writer.write(out)
            return
        for i in range(len(out)):
            writer.write(out[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)


def _verbs(pending: bytes) -> list[bytes]:
    """The mail commands in ``pending``: its lines that begin with one (a chunk's don't)."""
    lines = (line[:4] for line in pending.split(b"\r\n"))
    return [verb for verb in lines if verb in (b"RSET", b"MAIL", b"RCPT", b"BDAT")]


def _whole_group(pending: bytes) -> bool:
    """MAIL to DATA, or to a BDAT line and all of its chunk."""
    if b"DATA\r\n" in pending:
        return True
    at = pending.find(b"BDAT ")
    eol = pending.find(b"\r\n", at)
    return at >= 0 and eol >= 0 and len(pending) - eol - 2 >= int(pending[at:eol].split()[1])


async def _read_until_end(pending: bytes, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """A DATA body up to its lone dot (the dot included), and what follows it."""
    while True:
        if pending.startswith(b".\r\n"):
            return pending[:3], pending[3:]
        at = pending.find(b"\r\n.\r\n")
        if at >= 0:
            return pending[: at + 5], pending[at + 5 :]
        pending += await _more(reader)


async def _more(reader: asyncio.StreamReader) -> bytes:
    data = await reader.read(65536)
    if not data:
        raise ConnectionError("the client went away mid-message")
    return data


async def start_raw_server(handler: RawServer) -> asyncio.Server:
    server = await asyncio.start_server(handler.serve, "127.0.0.1", 0)
    handler.port = server.sockets[0].getsockname()[1]
    return server


def raw_transport(server: RawServer, **options: Any) -> SmtpTransport:
    """A transport to ``server``, 2 s for each command."""
    return SmtpTransport(host="127.0.0.1", port=server.port, timeout=2, **options)
