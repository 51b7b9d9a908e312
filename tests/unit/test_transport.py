"""Transports: MemoryTransport's contract, and SmtpTransport against a real in-test server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from preaviso.mail import (
    InvalidAddressError,
    MemoryTransport,
    SmtpAuthenticationError,
    SmtpPermanentError,
    SmtpReply,
    SmtpSenderRefusedError,
    SmtpTemporaryError,
    SmtpTimeoutError,
    SmtpTransport,
    SmtpUnconfirmedError,
    SmtpUnreachableError,
    Transport,
    TransportError,
)
from preaviso.settings import Settings, SmtpTls
from tests.unit.smtp_servers import (
    MESSAGE,
    SENDER,
    Server,
    start_server,
    transport_for,
)

pytestmark = pytest.mark.both_loops

# -- MemoryTransport ---------------------------------------------------------------------


async def test_memory_transport_keeps_what_it_sends() -> None:
    transport = MemoryTransport()

    reply = await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert reply == SmtpReply(250, "2.0.0 Ok: queued as 1")
    assert len(transport.sent) == 1
    assert transport.sent[0].sender == SENDER
    assert transport.sent[0].recipients == ("jose@example.com",)
    assert transport.sent[0].message == MESSAGE


async def test_memory_transport_refuses_recipients_it_is_told_to() -> None:
    transport = MemoryTransport()
    transport.fail("Gone@Example.com", 550, "5.1.1 No such user")

    with pytest.raises(SmtpPermanentError) as caught:
        await transport.send(SENDER, ["gone@example.com"], MESSAGE)

    assert caught.value.code == 550
    assert caught.value.reply == "5.1.1 No such user"
    assert caught.value.recipient == "gone@example.com"
    assert caught.value.command == "RCPT"
    assert transport.sent == []


async def test_memory_transport_can_refuse_only_a_few_times() -> None:
    transport = MemoryTransport()
    transport.fail("busy@example.com", 451, "4.3.0 Try again later", times=1)

    with pytest.raises(SmtpTemporaryError) as caught:
        await transport.send(SENDER, ["busy@example.com"], MESSAGE)
    reply = await transport.send(SENDER, ["busy@example.com"], MESSAGE)

    assert caught.value.code == 451
    assert reply.code == 250
    assert len(transport.sent) == 1


async def test_memory_transport_recovers_when_told() -> None:
    transport = MemoryTransport()
    transport.fail("a@example.com")
    transport.fail("b@example.com")

    transport.recover("a@example.com")
    await transport.send(SENDER, ["a@example.com"], MESSAGE)
    transport.recover()
    await transport.send(SENDER, ["b@example.com"], MESSAGE)

    assert len(transport.sent) == 2


def test_memory_transport_refusals_need_an_error_code() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        MemoryTransport().fail("a@example.com", 250)


async def test_memory_transport_can_play_unreachable() -> None:
    transport = MemoryTransport()
    transport.unreachable = True

    with pytest.raises(SmtpUnreachableError):
        await transport.check()
    with pytest.raises(SmtpUnreachableError):
        await transport.send(SENDER, ["a@example.com"], MESSAGE)


async def test_memory_transport_refuses_to_send_once_closed() -> None:
    async with MemoryTransport() as transport:
        pass

    with pytest.raises(TransportError, match="closed"):
        await transport.send(SENDER, ["a@example.com"], MESSAGE)


def test_both_transports_fit_the_transport_protocol() -> None:
    transports: list[Transport] = [MemoryTransport(), SmtpTransport()]  # checked by mypy

    assert all(callable(transport.send) for transport in transports)


@pytest.mark.parametrize("make", [MemoryTransport, SmtpTransport])
async def test_envelope_addresses_are_checked_before_sending(make: Callable[[], Any]) -> None:
    transport: Transport = make()

    with pytest.raises(InvalidAddressError, match="RCPT TO"):
        await transport.send(SENDER, ["jose@example.com\r\nRCPT TO:<evil@example.com>"], MESSAGE)
    with pytest.raises(InvalidAddressError, match="MAIL FROM"):
        await transport.send("bad sender", ["jose@example.com"], MESSAGE)
    with pytest.raises(TypeError):
        await transport.send(SENDER, "jose@example.com", MESSAGE)
    with pytest.raises(ValueError, match="recipient"):
        await transport.send(SENDER, [], MESSAGE)
    await transport.aclose()

    # -- the in-test SMTP server (fixture `server`, conftest.py) -------------------------------
    await asyncio.sleep(0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- SmtpTransport: sending --------------------------------------------------------------


async def test_the_server_receives_the_exact_bytes(server: Server) -> None:
    async with transport_for(server) as transport:
        reply = await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert reply == SmtpReply(250, "2.0.0 Ok: queued as 1")
    assert server.messages == [MESSAGE]


async def test_concurrent_sends_share_the_pool(server: Server) -> None:
    async with transport_for(server, connections=2) as transport:
        replies = await asyncio.gather(
            *(transport.send(SENDER, [f"user{i}@example.com"], MESSAGE) for i in range(50))
        )

    assert {reply.code for reply in replies} == {250}
    assert len(server.messages) == 50
    assert server.connections <= 2
    assert transport.opened == server.connections


async def test_sequential_sends_reuse_one_connection(server: Server) -> None:
    async with transport_for(server, connections=4) as transport:
        for i in range(10):
            await transport.send(SENDER, [f"user{i}@example.com"], MESSAGE)

    assert server.connections == 1


async def test_a_refused_recipient_is_a_permanent_error_and_the_connection_lives_on(
    server: Server,
) -> None:
    async with transport_for(server, connections=1) as transport:
        with pytest.raises(SmtpPermanentError) as caught:
            await transport.send(SENDER, ["gone@example.com"], MESSAGE)
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert (caught.value.code, caught.value.command) == (550, "RCPT")
    assert caught.value.recipient == "gone@example.com"
    assert "5.1.1 No such user" in str(caught.value)
    assert server.connections == 1


async def test_a_4xx_is_a_temporary_error(server: Server) -> None:
    async with transport_for(server) as transport:
        with pytest.raises(SmtpTemporaryError) as caught:
            await transport.send(SENDER, ["busy@example.com"], MESSAGE)

    assert caught.value.code == 451
    assert caught.value.recipient == "busy@example.com"


async def test_a_refused_message_is_a_permanent_error_on_data(server: Server) -> None:
    async with transport_for(server) as transport:
        with pytest.raises(SmtpPermanentError) as caught:
            await transport.send(SENDER, ["jose@example.com"], MESSAGE + b"REJECT-ME\r\n")

    assert (caught.value.code, caught.value.command, caught.value.recipient) == (554, "DATA", None)


async def test_a_partly_refused_message_names_the_refused_recipient(server: Server) -> None:
    async with transport_for(server) as transport:
        with pytest.raises(SmtpPermanentError) as caught:
            await transport.send(SENDER, ["jose@example.com", "gone@example.com"], MESSAGE)

    assert caught.value.recipient == "gone@example.com"
    assert len(server.messages) == 1  # the other recipient got it


# -- SmtpTransport: broken connections ---------------------------------------------------


async def test_a_connection_the_server_closed_is_replaced(server: Server) -> None:
    async with transport_for(server, connections=1) as transport:
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)
        for session in server.sessions:
            if session.transport is not None:
                session.transport.close()
        reply = await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert reply.code == 250
    assert server.connections == 2
    assert len(server.messages) == 2


async def test_a_reused_connection_dropped_before_the_message_is_retried_once_then_fails(
    server: Server,
) -> None:
    async with transport_for(server, connections=1) as transport:
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)
        server.drop_on_mail = True
        with pytest.raises(SmtpUnreachableError) as caught:
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert server.connections == 2  # the reused one, and one fresh retry
    assert f"127.0.0.1:{server.port}" in str(caught.value)
    assert len(server.messages) == 1


async def test_a_fresh_connection_dropped_before_the_message_is_not_retried(
    server: Server,
) -> None:
    server.drop_on_mail = True
    async with transport_for(server) as transport:
        with pytest.raises(SmtpUnreachableError):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert server.connections == 1


async def test_a_connection_dropped_after_the_message_is_unconfirmed_and_not_resent(
    server: Server,
) -> None:
    """The server got every byte and may have kept the mail: sending it again here could
    deliver it twice, so the caller is told, reused connection or not."""
    async with transport_for(server, connections=1) as transport:
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)
        server.drop_on_data = True
        with pytest.raises(SmtpUnconfirmedError, match="got the whole message"):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert server.connections == 1  # no fresh retry


@pytest.mark.parametrize(
    ("late", "options", "raised", "said"),
    [
        ("mail_delay", {"timeout": 0.3}, SmtpTimeoutError, r"did not answer within 0\.3s"),
        ("data_delay", {"data_timeout": 0.3}, SmtpUnconfirmedError, r"no answer within 0\.3s"),
    ],
    ids=["a-command", "the-message"],
)
async def test_an_answer_that_does_not_come_in_time_discards_the_connection(
    server: Server, late: str, options: dict[str, float], raised: type[Exception], said: str
) -> None:
    """Late for a command: the message was not taken. Late once the whole message went:
    unconfirmed, it may have been kept. Either way the connection is not used again."""
    setattr(server, late, 2.0)
    async with transport_for(server, connections=1, **options) as transport:
        with pytest.raises(raised, match=said):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)
        setattr(server, late, 0.0)
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert server.connections == 2


async def test_the_answer_to_the_message_gets_the_data_timeout_not_the_command_one(
    server: Server,
) -> None:
    """RFC 5321 4.5.3.2.6: a server may take minutes to answer a message it keeps."""
    server.data_delay = 0.6
    async with transport_for(server, connections=1, timeout=0.3, data_timeout=2) as transport:
        reply = await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert reply.code == 250
    assert len(server.messages) == 1


@pytest.mark.parametrize(
    ("reply", "raised"),
    [
        ("550 5.7.1 Sender not allowed to relay", SmtpSenderRefusedError),
        ("553 5.1.8 Sender address rejected", SmtpSenderRefusedError),
        ("552 5.3.4 Message size exceeds fixed limit", SmtpPermanentError),
        ("451 4.3.0 Try again later", SmtpTemporaryError),
    ],
)
async def test_a_refused_sender_is_the_configuration_not_a_verdict_on_the_message(
    server: Server, reply: str, raised: type[Exception]
) -> None:
    """A 5xx to MAIL FROM is the same for every mail (settling each notice as rejected
    would drop them all); only 552, this message's size, is about the message."""
    server.mail_reply = reply
    async with transport_for(server) as transport:
        with pytest.raises(raised) as caught:
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert type(caught.value) is raised
    assert server.messages == []


# -- SmtpTransport: reaching the server --------------------------------------------------


async def test_check_passes_against_a_live_server(server: Server) -> None:
    async with transport_for(server) as transport:
        await transport.check()


async def test_check_names_the_address_when_nothing_listens() -> None:
    port = closed_port()
    transport = SmtpTransport(host="127.0.0.1", port=port, connect_timeout=2.0)

    started = time.monotonic()
    with pytest.raises(SmtpUnreachableError) as caught:
        await transport.check()

    assert time.monotonic() - started < 2.0
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "PREAVISO_SMTP_HOST" in str(caught.value)
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", port)


async def test_a_server_that_never_greets_times_out_after_connect_timeout() -> None:
    loop = asyncio.get_running_loop()
    silent = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    transport = SmtpTransport(host="127.0.0.1", port=port, connect_timeout=0.5)

    started = time.monotonic()
    with pytest.raises(SmtpUnreachableError, match=r"no answer within 0\.5s"):
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert time.monotonic() - started < 2.0
    silent.close()


async def test_auth_is_used_when_a_username_is_set() -> None:
    def authenticator(
        server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    handler = Server()
    listener = await start_server(handler, authenticator=authenticator, auth_require_tls=False)
    try:
        async with transport_for(handler, username="preaviso", password="s3cret") as transport:
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)
        async with transport_for(handler, username="preaviso", password="wrong") as transport:
            with pytest.raises(SmtpAuthenticationError, match="PREAVISO_SMTP_PASSWORD"):
                await transport.send(SENDER, ["jose@example.com"], MESSAGE)
    finally:
        listener.close()

    assert len(handler.messages) == 1
    session = handler.sessions[0].session
    assert session is not None
    assert session.authenticated


async def test_a_closed_transport_refuses_to_send(server: Server) -> None:
    transport = transport_for(server)
    await transport.send(SENDER, ["jose@example.com"], MESSAGE)
    await transport.aclose()
    await transport.aclose()  # idempotent

    with pytest.raises(TransportError, match="closed"):
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)


def test_from_settings_maps_every_smtp_setting() -> None:
    settings = Settings(
        smtp_host="mail.example.com",
        smtp_port=587,
        smtp_tls=SmtpTls.STARTTLS,
        smtp_verify_tls=False,
        smtp_username="preaviso",
        smtp_password="s3cret",
        smtp_connections=8,
        smtp_timeout=12.0,
        connect_timeout=3.0,
    )

    transport = SmtpTransport.from_settings(settings)

    assert (transport.host, transport.port, transport.tls) == ("mail.example.com", 587, "starttls")
    assert (transport.verify_tls, transport.username) == (False, "preaviso")
    assert (transport.connections, transport.timeout, transport.connect_timeout) == (8, 12.0, 3.0)
    assert "s3cret" not in repr(transport)
