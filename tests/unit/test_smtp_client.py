"""A canonical message is sent as it is; anything else as aiosmtplib would send it."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX

from preaviso.mail import (
    SmtpPermanentError,
    SmtpTimeoutError,
    SmtpUnconfirmedError,
    SmtpUnreachableError,
)
from preaviso.mail.smtp_client import Client, canonical, dot_stuffed, envelope_address
from tests.unit.smtp_servers import (
    MESSAGE,
    SENDER,
    RawServer,
    Server,
    raw_transport,
    start_server,
    transport_for,
)

pytestmark = pytest.mark.both_loops


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (MESSAGE, True),
        (b"a\r\nb\r\n", True),
        (b"a\r\nb", True),  # the line break at the end is added
        (b"a\nb\r\n", False),  # a bare LF
        (b"a\rb\r\n", False),  # a bare CR
        (b"a\r\r\nb\r\n", False),
        (b"", True),
    ],
)
def test_canonical_means_no_bare_cr_or_lf(message: bytes, expected: bool) -> None:
    assert canonical(message) is expected


def test_dot_stuffing_is_what_aiosmtplib_does_to_a_canonical_message() -> None:
    rng = random.Random(7)
    pieces = [b".", b"..", b"a", b" ", b"=2E", b"-", b"x.y"]
    for _ in range(500):
        lines = [b"".join(rng.choices(pieces, k=rng.randrange(4))) for _ in range(5)]
        message = b"\r\n".join(lines) + b"\r\n"
        assert dot_stuffed(message) == PERIOD_REGEX.sub(b"..", message)  # the reference


def test_envelope_addresses_are_what_aiosmtplib_quotes() -> None:
    rng = random.Random(11)
    atext = "abcXYZ0189!#$%&'*+/=?^_`{|}~-"
    for _ in range(2000):
        local = ".".join(
            "".join(rng.choices(atext, k=rng.randrange(1, 6))) for _ in range(rng.randrange(1, 3))
        )
        domain = rng.choice(["example.com", "a-b.example", "x1.y2.z3", "localhost"])
        address = f"{local}@{domain}"
        assert envelope_address(address) == quote_address(address).encode()  # the reference


@pytest.mark.parametrize(
    "address", ["Ana <ana@example.com>", " ana@example.com ", '"a b"@example.com', "a..b@x.com"]
)
def test_an_address_that_is_not_plain_is_quoted_by_aiosmtplib(address: str) -> None:
    assert envelope_address(address) == quote_address(address).encode()


@pytest.mark.parametrize(
    ("message", "not_used"),
    [(MESSAGE, "sendmail"), (MESSAGE.replace(b"\r\n", b"\n"), "send_canonical")],
    ids=["canonical-as-it-is", "bare-lf-through-sendmail"],
)
async def test_each_message_takes_its_way_and_arrives_the_same(
    server: Server, monkeypatch: pytest.MonkeyPatch, message: bytes, not_used: str
) -> None:
    async def not_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"this message must not go through {not_used}")

    monkeypatch.setattr(Client, not_used, not_here)
    async with transport_for(server) as transport:
        await transport.send(SENDER, ["jose@example.com"], message)

    assert server.messages == [MESSAGE]  # CRLF, its dot lines intact


async def test_a_canonical_message_without_a_last_line_break_gets_one(server: Server) -> None:
    async with transport_for(server) as transport:
        await transport.send(SENDER, ["jose@example.com"], MESSAGE.removesuffix(b"\r\n"))

    assert server.messages == [MESSAGE]


PLAIN = b"From: avisos@example.com\r\nSubject: hola\r\n\r\nHola.\r\n"


@pytest.mark.parametrize(("limit", "taken"), [(len(PLAIN), True), (len(PLAIN) - 1, False)])
async def test_mail_from_declares_the_exact_size(limit: int, taken: bool) -> None:
    """A server whose limit the declared SIZE passes refuses at MAIL, before any data.
    (No dot lines here: aiosmtpd counts the dots stuffing adds against its limit.)"""
    handler = Server()
    listening = await start_server(handler, data_size_limit=limit)
    try:
        async with transport_for(handler) as transport:
            if taken:
                await transport.send(SENDER, ["jose@example.com"], PLAIN)
            else:
                with pytest.raises(SmtpPermanentError) as refused:
                    await transport.send(SENDER, ["jose@example.com"], PLAIN)
                assert (refused.value.code, refused.value.command) == (552, "MAIL")
    finally:
        listening.close()
    assert handler.messages == ([PLAIN] if taken else [])


# -- PIPELINING (RFC 2920) ---------------------------------------------------------------


async def test_a_server_offering_pipelining_gets_mail_rcpt_and_data_in_one_write(
    raw: RawServer,
) -> None:
    raw.strict = True  # answers nothing until the whole group is there
    async with raw_transport(raw) as transport:
        for _ in range(3):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert raw.command_reads[1:] == [[b"MAIL", b"RCPT", b"DATA"]] * 3 + [[b"QUIT"]]
    assert raw.messages == [dot_stuffed(MESSAGE) + b".\r\n"] * 3


async def test_a_server_not_offering_it_gets_one_command_at_a_time(raw: RawServer) -> None:
    raw.offer_pipelining = False
    async with raw_transport(raw) as transport:
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert raw.command_reads[1:] == [[b"MAIL"], [b"RCPT"], [b"DATA"], [b"QUIT"]]


async def test_pipelining_turned_off_sends_one_command_at_a_time(raw: RawServer) -> None:
    async with raw_transport(raw, pipelining=False) as transport:
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert raw.command_reads[1:] == [[b"MAIL"], [b"RCPT"], [b"DATA"], [b"QUIT"]]


async def test_replies_split_anywhere_and_on_several_lines_are_read_whole(
    raw: RawServer,
) -> None:
    raw.byte_by_byte = True
    raw.rcpt_reply = b"250-2.1.5 first line\r\n250 2.1.5 Ok\r\n"
    async with raw_transport(raw) as transport:
        reply = await transport.send(SENDER, ["jose@example.com"], MESSAGE)
        again = await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert (reply.code, again.code) == (250, 250)
    assert len(raw.messages) == 2


async def test_data_taken_although_no_recipient_was_ends_empty_and_the_refusal_is_raised(
    raw: RawServer,
) -> None:
    raw.rcpt_reply = b"550 5.1.1 No such user\r\n"  # and DATA still gets 354
    async with raw_transport(raw) as transport:
        with pytest.raises(SmtpPermanentError) as refused:
            await transport.send(SENDER, ["gone@example.com"], MESSAGE)
        raw.rcpt_reply = b"250 2.1.5 Ok\r\n"
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)  # the same connection

    assert (refused.value.code, refused.value.command) == (550, "RCPT")
    assert raw.messages == [dot_stuffed(MESSAGE) + b".\r\n"]  # only the second mail
    assert [b"RSET"] in raw.command_reads


async def test_a_group_never_answered_times_out(raw: RawServer) -> None:
    raw.silent = True
    async with raw_transport(raw) as transport:
        transport.timeout = 0.3
        with pytest.raises(SmtpTimeoutError):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)


async def test_a_chunk_whose_own_reply_never_comes_is_unconfirmed(raw: RawServer) -> None:
    """MAIL and RCPT answered, the message's reply withheld: it may have been kept."""
    raw.offer_chunking, raw.bdat_reply = True, b""
    async with raw_transport(raw, data_timeout=0.3) as transport:
        with pytest.raises(SmtpUnconfirmedError):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)


async def test_a_group_with_its_chunk_never_answered_times_out_as_a_command(
    raw: RawServer,
) -> None:
    """Not even MAIL answered (a dead connection): the command timeout, not the message's,
    and not a possible duplicate, since no server keeps a message whose MAIL it ignored."""
    raw.offer_chunking, raw.silent = True, True
    async with raw_transport(raw, data_timeout=30) as transport:  # commands: 2 s
        started = time.monotonic()
        with pytest.raises(SmtpTimeoutError):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert time.monotonic() - started < 5


async def test_a_reply_that_is_not_smtp_is_a_server_fault_not_a_refusal(raw: RawServer) -> None:
    """Not a 5xx for the notice (it would be settled as rejected), and the connection, in
    an unknown state, is not used again."""
    raw.garbled = True
    async with raw_transport(raw) as transport:
        with pytest.raises(SmtpUnreachableError, match="Malformed"):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)
        raw.garbled = False
        reply = await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert reply.code == 250
    assert transport.opened == 2


async def test_a_connection_closed_before_the_replies_is_a_server_fault(raw: RawServer) -> None:
    raw.drop_on_group = True
    async with raw_transport(raw) as transport:
        with pytest.raises(SmtpUnreachableError, match="closed during the mail transaction"):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert raw.messages == []


# -- CHUNKING (RFC 3030), with PIPELINING ------------------------------------------------


async def test_with_chunking_too_the_message_goes_in_the_same_write_undotted(
    raw: RawServer,
) -> None:
    raw.offer_chunking = True
    raw.strict = True  # answers nothing until the group and its chunk are there
    async with raw_transport(raw) as transport:
        for _ in range(2):
            reply = await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert reply.code == 250
    assert raw.command_reads[1:] == [[b"RSET", b"MAIL", b"RCPT", b"BDAT"]] * 2 + [[b"QUIT"]]
    assert raw.messages == [MESSAGE] * 2  # the exact bytes: a chunk is not dot-stuffed


async def test_chunking_without_pipelining_is_not_used(raw: RawServer) -> None:
    raw.offer_chunking, raw.offer_pipelining = True, False
    async with raw_transport(raw) as transport:
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert raw.command_reads[1:] == [[b"MAIL"], [b"RCPT"], [b"DATA"], [b"QUIT"]]


async def test_a_chunk_for_nobody_is_refused_and_the_connection_goes_on(raw: RawServer) -> None:
    raw.offer_chunking = True
    raw.rcpt_reply = b"550 5.1.1 No such user\r\n"  # and the BDAT gets 554
    async with raw_transport(raw) as transport:
        with pytest.raises(SmtpPermanentError) as refused:
            await transport.send(SENDER, ["gone@example.com"], MESSAGE)
        raw.rcpt_reply = b"250 2.1.5 Ok\r\n"
        await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert (refused.value.code, refused.value.command) == (550, "RCPT")
    assert raw.messages == [MESSAGE]  # the server ends no transaction at a refused chunk:
    assert raw.command_reads[-2][0] == b"RSET"  # the next mail's group does


async def test_a_refused_chunk_is_a_refused_message(raw: RawServer) -> None:
    raw.offer_chunking = True
    raw.bdat_reply = b"552 5.3.4 Message too big\r\n"
    async with raw_transport(raw) as transport:
        with pytest.raises(SmtpPermanentError) as refused:
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert (refused.value.code, refused.value.command) == (552, "DATA")
    assert raw.messages == []
