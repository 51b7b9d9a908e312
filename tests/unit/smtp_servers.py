"""An in-test SMTP server and the message it is sent, shared by the transport tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP

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
    drop_on_data: bool = False
    data_delay: float = 0.0
    pipelining: bool = False
    """Offer PIPELINING (aiosmtpd serves it, reading one command after another)."""

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

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
            assert server.transport is not None
            server.transport.close()
            return "421 closing"
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if b"REJECT-ME" in envelope.original_content:
            return "554 5.7.1 Message rejected"
        self.messages.append(envelope.original_content)
        return f"250 2.0.0 Ok: queued as {len(self.messages)}"


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

    It keeps each read of commands (``reads``). ``strict`` answers a mail's MAIL, RCPT
    and DATA only once all three have come, as one group: a client that waits for
    MAIL's reply before it sends RCPT gets no answer. The other options misbehave.
    """

    offer_pipelining: bool = True
    strict: bool = False
    rcpt_reply: bytes = b"250 2.1.5 Ok\r\n"
    data_reply: bytes = b"354 Go ahead\r\n"
    byte_by_byte: bool = False
    """Send each group's replies one byte per write."""
    silent: bool = False
    """Never answer a group."""
    drop_on_group: bool = False
    """Close the connection once a group has come, without answering."""
    port: int = 0
    reads: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ehlo = b"250-raw\r\n" + (b"250-PIPELINING\r\n" if self.offer_pipelining else b"")
        writer.write(b"220 raw ESMTP\r\n")
        pending = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            self.reads.append(chunk)
            pending += chunk
            if self.strict and pending.startswith(b"MAIL") and b"DATA\r\n" not in pending:
                continue  # the rest of the group is still to come
            lines, pending = pending.split(b"\r\n"), b""
            pending = lines.pop()  # an unfinished line, if any
            replies = [self._reply(line) for line in lines]
            if self.silent and any(line.startswith(b"MAIL") for line in lines):
                continue
            if self.drop_on_group and any(line.startswith(b"MAIL") for line in lines):
                writer.close()
                return
            out = b"".join(replies).replace(b"EHLO-REPLY", ehlo + b"250 SIZE 1000000\r\n")
            if self.byte_by_byte:
                for i in range(len(out)):
                    writer.write(out[i : i + 1])
                    await writer.drain()
                    await asyncio.sleep(0)
            else:
                writer.write(out)
            if any(line == b"DATA" for line in lines) and self.data_reply.startswith(b"354"):
                body = b""
                while not (body == b".\r\n" or body.endswith(b"\r\n.\r\n")):
                    body += await reader.readuntil(b".\r\n")
                if body == b".\r\n":  # an empty message: nobody to send it to
                    writer.write(b"554 5.5.1 No valid recipients\r\n")
                    continue
                self.messages.append(body)
                writer.write(b"250 2.0.0 Ok: queued\r\n")
            if any(line == b"QUIT" for line in lines):
                writer.close()
                return

    def _reply(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"EHLO":
            return b"EHLO-REPLY"
        if verb == b"RCPT":
            return self.rcpt_reply
        if verb == b"DATA":
            return self.data_reply
        return b"250 2.0.0 Ok\r\n"

    def command_reads(self) -> list[list[bytes]]:
        """The commands each read held (reads inside a message's body left out)."""
        out = []
        for read in self.reads:
            lines = [line[:4] for line in read.split(b"\r\n") if line[:4].isalpha()]
            if lines and lines[0] in {b"EHLO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"QUIT"}:
                out.append(lines)
        return out


async def start_raw_server(handler: RawServer) -> asyncio.Server:
    server = await asyncio.start_server(handler.serve, "127.0.0.1", 0)
    handler.port = server.sockets[0].getsockname()[1]
    return server
