"""Two mails on one connection at once, when the server offers PIPELINING and CHUNKING.

The next mail goes before the last one is answered: a BDAT chunk says its own length,
so nothing of one mail can be read as the next one's commands. Each such mail starts
with RSET. ``RawServer`` shows what the client sent and when it answered.
"""

from __future__ import annotations

import asyncio

import pytest

from preaviso.mail import (
    SmtpReply,
    SmtpTemporaryError,
    SmtpTimeoutError,
    SmtpTransport,
    SmtpUnconfirmedError,
)
from preaviso.mail.smtp_client import dot_stuffed
from tests.unit.smtp_servers import MESSAGE, SENDER, RawServer, raw_transport

pytestmark = pytest.mark.both_loops


async def _first_mail_alone(transport: SmtpTransport) -> None:
    """A new connection's first mail goes alone: its EHLO says whether mails may overlap."""
    await transport.send(SENDER, ["jose@example.com"], MESSAGE)


async def test_a_connection_takes_the_next_mail_before_the_last_one_is_answered(
    raw: RawServer,
) -> None:
    raw.offer_chunking = True
    async with raw_transport(raw, connections=1) as transport:
        await _first_mail_alone(transport)
        raw.in_pairs = True  # no answer to a mail before the next one has come
        replies = await asyncio.gather(
            *(transport.send(SENDER, [f"{n}@example.com"], MESSAGE) for n in ("ana", "jose"))
        )

    assert [reply.code for reply in replies] == [250, 250]
    assert raw.messages == [MESSAGE] * 3
    assert transport.opened == 1
    assert [verb for read in raw.command_reads[2:-1] for verb in read] == [
        b"RSET",
        b"MAIL",
        b"RCPT",
        b"BDAT",
    ] * 2


async def test_a_mail_refused_for_now_leaves_the_one_behind_it_unharmed(raw: RawServer) -> None:
    """The server refuses a MAIL while a transaction is open, and a refused chunk ends
    none: each overlapping mail's RSET makes it independent of the one before it."""
    raw.offer_chunking = True
    async with raw_transport(raw, connections=1) as transport:
        await _first_mail_alone(transport)
        raw.in_pairs = True
        refused, taken = await asyncio.gather(
            transport.send(SENDER, ["busy@example.com"], MESSAGE),
            transport.send(SENDER, ["jose@example.com"], MESSAGE),
            return_exceptions=True,
        )

    assert isinstance(refused, SmtpTemporaryError), refused
    assert (refused.code, refused.command) == (451, "RCPT")
    assert isinstance(taken, SmtpReply), taken
    assert taken.code == 250
    assert raw.messages == [MESSAGE] * 2
    assert transport.opened == 1


async def test_a_connection_lost_under_two_mails_leaves_both_unconfirmed(
    raw: RawServer,
) -> None:
    """The server answered the first mail's commands, then went away: that chunk may have
    been kept. The second went behind it, so the server may have read it too, even
    answering nothing of it: neither is sent again here (their notices' retries will,
    counted as possibly sent twice)."""
    raw.offer_chunking = True
    async with raw_transport(raw, connections=1) as transport:
        await _first_mail_alone(transport)
        raw.drop_on_chunk = True
        outcomes = await asyncio.gather(
            *(transport.send(SENDER, [f"{n}@example.com"], MESSAGE) for n in ("ana", "jose")),
            return_exceptions=True,
        )

    assert [type(o) for o in outcomes] == [SmtpUnconfirmedError] * 2, outcomes
    assert raw.command_reads[2:4] == [[b"RSET", b"MAIL", b"RCPT", b"BDAT"]] * 2  # it overlapped
    assert transport.opened == 1


async def test_a_mail_behind_one_that_times_out_is_unconfirmed_not_sent_again(
    raw: RawServer,
) -> None:
    """The first mail's answer never comes: it times out, and its connection is closed
    under the second, whose own time had not even begun (its answers come after the
    first's). Both went to the server; only the first had no answer to anything."""
    raw.offer_chunking = True
    async with SmtpTransport(
        host="127.0.0.1", port=raw.port, timeout=0.3, connections=1
    ) as transport:
        await _first_mail_alone(transport)
        raw.silent = True
        outcomes = await asyncio.gather(
            *(transport.send(SENDER, [f"{n}@example.com"], MESSAGE) for n in ("ana", "jose")),
            return_exceptions=True,
        )

    assert [type(o) for o in outcomes] == [SmtpTimeoutError, SmtpUnconfirmedError], outcomes
    assert transport.opened == 1


async def test_a_first_mail_refused_still_lets_the_next_ones_overlap(raw: RawServer) -> None:
    """Whether mails may overlap is known once EHLO was answered, whatever became of the
    mail that said it."""
    raw.offer_chunking = True
    async with raw_transport(raw, connections=1) as transport:
        with pytest.raises(SmtpTemporaryError):
            await transport.send(SENDER, ["busy@example.com"], MESSAGE)
        raw.in_pairs = True
        replies = await asyncio.gather(
            *(transport.send(SENDER, [f"{n}@example.com"], MESSAGE) for n in ("ana", "jose"))
        )

    assert [reply.code for reply in replies] == [250, 250]
    assert transport.opened == 1


async def test_without_chunking_mails_take_a_connection_one_after_the_other(
    raw: RawServer,
) -> None:
    """A DATA message ends only at its lone dot: a mail pipelined behind it would be
    read as its text. So the pool never lets two mails share such a connection."""
    raw.strict = True
    async with raw_transport(raw, connections=1) as transport:
        await asyncio.gather(
            *(transport.send(SENDER, ["jose@example.com"], MESSAGE) for _ in range(3))
        )

    assert raw.command_reads[1:] == [[b"MAIL", b"RCPT", b"DATA"]] * 3 + [[b"QUIT"]]
    assert raw.messages == [dot_stuffed(MESSAGE) + b".\r\n"] * 3


def test_past_12_connections_or_without_pipelining_a_connection_carries_one_mail() -> None:
    """Twelve connections keep enough mails in flight alone; more would only widen the
    bound (deliver's window cannot give the second mail its place any more)."""
    assert [SmtpTransport(connections=c).overlap for c in (1, 4, 12, 13, 64)] == [2, 2, 2, 1, 1]
    assert SmtpTransport(connections=4, pipelining=False).overlap == 1


async def test_past_12_connections_a_mail_starts_with_no_rset(raw: RawServer) -> None:
    """One mail a connection there: nothing can be left open by a mail ahead of it."""
    raw.offer_chunking, raw.strict = True, True
    async with raw_transport(raw, connections=13) as transport:
        for _ in range(2):
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)

    assert raw.command_reads[1:] == [[b"MAIL", b"RCPT", b"BDAT"]] * 2 + [[b"QUIT"]]
