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
