"""A canonical message is sent as it is; anything else as aiosmtplib would send it."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiosmtplib.protocol import PERIOD_REGEX

from preaviso.mail import SmtpPermanentError
from preaviso.mail.smtp_client import Client, canonical, dot_stuffed
from tests.unit.smtp_servers import MESSAGE, SENDER, Server, start_server, transport_for


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
