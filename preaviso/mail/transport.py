"""Send prebuilt message bytes over a pooled SMTP transport (``memory.py``: one for tests).

Opening an SMTP connection (TCP, greeting, EHLO, maybe TLS and AUTH) costs far more than
one mail transaction on an open one, so ``SmtpTransport`` keeps a small pool of
connections and reuses them; a new connection per mail is ~15x slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

import aiosmtplib

from preaviso.mail.errors import (
    HeaderInjectionError,
    InvalidAddressError,
    SmtpAuthenticationError,
    SmtpReplyError,
    SmtpSenderRefusedError,
    SmtpTimeoutError,
    SmtpUnconfirmedError,
    SmtpUnreachableError,
    TransportError,
)
from preaviso.mail.message import _check_address
from preaviso.mail.smtp_client import Client, canonical, overlap
from preaviso.settings import SmtpTls

if TYPE_CHECKING:
    from preaviso.settings import Settings

__all__ = [
    "ClosingContext",
    "SmtpReply",
    "SmtpTransport",
    "Transport",
    "check_envelope",
    "sends_at_once",
]


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """The server's answer to the end of DATA: its word that it took the message."""

    code: int
    message: str


class Transport(Protocol):
    """What the sending stage needs; ``SmtpTransport`` and ``MemoryTransport`` provide it."""

    async def send(self, sender: str, recipients: Sequence[str], message: bytes) -> SmtpReply:
        """Deliver ``message`` (complete RFC 5322 bytes) or raise a ``TransportError``."""
        ...

    async def check(self) -> None:
        """Raise ``SmtpUnreachableError`` unless the server can be reached right now."""
        ...

    async def aclose(self) -> None:
        """Release connections; later sends raise ``TransportError``."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ClosingContext:
    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def check_envelope(sender: str, recipients: Sequence[str]) -> list[str]:
    # Checked here too: an address with CR/LF would otherwise inject SMTP commands.
    if isinstance(recipients, str):
        raise TypeError("recipients must be a sequence of addresses, not one string")
    if not recipients:
        raise ValueError("at least one recipient is needed")
    rcpts = list(recipients)
    for command, address in [("MAIL FROM", sender), *(("RCPT TO", rcpt) for rcpt in rcpts)]:
        try:
            _check_address(command, address)
        except HeaderInjectionError as exc:
            raise InvalidAddressError(command, address) from exc
    return rcpts


def _session_refusal(code: int, reply: str, command: str) -> TransportError:
    """A refusal of EHLO or MAIL: about the session or the sender, so every mail would get
    it, except 552 at MAIL (RFC 1870: this message's declared size is over the limit)."""
    if 500 <= code < 600 and not (command == "MAIL" and code == 552):
        return SmtpSenderRefusedError(code, reply, command=command)
    return SmtpReplyError.from_reply(code, reply, command=command)


class SmtpTransport(ClosingContext):
    """Up to ``connections`` SMTP connections, opened lazily and reused across sends.

    A connection the server closed while idle is replaced transparently; a reused one that
    breaks before the message went is reopened and the send tried once more. Once the
    whole message went, a lost answer is ``SmtpUnconfirmedError`` and nothing is resent
    here: the caller decides, knowing the server may have kept it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 25,
        tls: SmtpTls | str = SmtpTls.NONE,
        verify_tls: bool = True,
        username: str | None = None,
        password: str | None = None,
        connections: int = 4,
        timeout: float = 30.0,
        data_timeout: float | None = None,
        connect_timeout: float = 10.0,
        local_hostname: str | None = None,
        pipelining: bool = True,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.host = host
        self.port = port
        self.tls = SmtpTls(tls)
        self.verify_tls = verify_tls
        self.username = username
        self._password = password
        self.connections = connections
        self.timeout = timeout
        self.data_timeout = data_timeout
        """For the answer once the whole message is sent; None: ``timeout``."""
        self.connect_timeout = connect_timeout
        self.local_hostname = local_hostname
        self.pipelining = pipelining
        self.overlap = overlap(connections, pipelining)
        """Mails a connection carries at once once its server has shown it may."""
        self.opened = 0
        """Connections opened so far: a sign of pool health (it should stay small)."""
        self._closed = False
        self._turns = connections
        """Turns at the pool's connections: one each, ``overlap`` each once its server
        lets mails overlap (PIPELINING and CHUNKING)."""
        # LIFO: the most recently used connection (surely still open) goes out first, and
        # under light load the spare connections are never opened at all.
        self._idle: asyncio.LifoQueue[Client] = asyncio.LifoQueue()
        for _ in range(connections):
            self._idle.put_nowait(self._new_client())

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        password = settings.smtp_password
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            verify_tls=settings.smtp_verify_tls,
            username=settings.smtp_username,
            password=password.get_secret_value() if password is not None else None,
            connections=settings.smtp_connections,
            timeout=settings.smtp_timeout,
            data_timeout=settings.smtp_data_timeout,
            connect_timeout=settings.connect_timeout,
            pipelining=settings.smtp_pipelining,
        )

    def __repr__(self) -> str:
        return f"<SmtpTransport {self.host}:{self.port} tls={self.tls} pool={self.connections}>"

    async def send(self, sender: str, recipients: Sequence[str], message: bytes) -> SmtpReply:
        """Send on a pooled connection; the reply is the server's answer to DATA.

        Raises ``SmtpTemporaryError``/``SmtpPermanentError`` when the server refuses
        (with several recipients, after it may have taken the mail for the others),
        ``SmtpUnreachableError``, ``SmtpTimeoutError``, ``SmtpUnconfirmedError`` (the message
        went, its answer did not come), ``SmtpAuthenticationError`` or
        ``SmtpSenderRefusedError`` (the configuration, not the message, is refused).
        """
        rcpts = check_envelope(sender, recipients)
        client = await self._acquire()
        try:
            return await self._send_on(client, sender, rcpts, message)
        except SmtpReplyError:
            raise  # a refusal leaves the connection usable (aiosmtplib sends RSET)
        except BaseException:
            client.close()  # state unknown (timeout, cancelled mid-command): never reuse
            raise
        finally:
            self._idle.put_nowait(client)

    async def check(self) -> None:
        """Open one connection and send NOOP, so a worker fails at startup, not at mail one."""
        client = self._new_client()
        await self._connect(client)
        try:
            await client.noop(timeout=self.connect_timeout)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SmtpUnreachableError(self.host, self.port, f"NOOP failed: {exc}") from exc
        finally:
            await self._quit(client)

    async def aclose(self) -> None:
        """Wait for sends in flight, then QUIT every open connection."""
        if self._closed:
            return
        self._closed = True
        clients = {await self._idle.get() for _ in range(self._turns)}  # a client a turn
        await asyncio.gather(*(self._quit(client) for client in clients))

    # -- internals -----------------------------------------------------------------------

    def _new_client(self) -> Client:
        return Client(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self._password if self.username is not None else None,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            data_timeout=self.data_timeout,
            use_tls=self.tls is SmtpTls.TLS,
            start_tls=self.tls is SmtpTls.STARTTLS,
            validate_certs=self.verify_tls,
            pipelining=self.pipelining,
            overlap=self.overlap,
        )

    async def _acquire(self) -> Client:
        if self._closed:
            raise TransportError("the SMTP transport is closed")
        client = await self._idle.get()
        if self._closed:
            self._idle.put_nowait(client)
            raise TransportError("the SMTP transport is closed")
        return client

    async def _send_on(
        self, client: Client, sender: str, recipients: list[str], message: bytes
    ) -> SmtpReply:
        reused = await self._ready(client)
        try:
            return await self._take_turn(client, sender, recipients, message)
        except ConnectionError as exc:
            client.close()
            if client.message_sent or not reused:
                raise self._lost(client, exc) from exc
        # A reused connection went stale between sends: one fresh try, then give up.
        await self._ready(client)
        try:
            return await self._take_turn(client, sender, recipients, message)
        except ConnectionError as exc:
            client.close()
            raise self._lost(client, exc) from exc

    async def _ready(self, client: Client) -> bool:
        """Open ``client`` unless it is; one opening, whoever else holds a turn at it.
        True if it was open already. Open means ``_connect`` returned: aiosmtplib counts
        a connection as open before its greeting, STARTTLS and AUTH are through."""
        if client.ready:
            return True
        async with client.turn:
            if client.ready:  # another mail's turn opened it meanwhile
                return True
            await self._connect(client)
            client.opened_as = client.protocol
        return False

    async def _take_turn(
        self, client: Client, sender: str, recipients: list[str], message: bytes
    ) -> SmtpReply:
        """One mail: alongside the others on the connection once its server lets mails
        overlap, alone before (the first one on a new connection says EHLO). A message
        that is not canonical goes alone too (aiosmtplib's ``sendmail``)."""
        try:
            if client.overlapping and canonical(message):
                return await self._transaction(client, sender, recipients, message)
            async with client.turn:
                return await self._transaction(client, sender, recipients, message)
        finally:  # EHLO was said (by this mail, or at AUTH): the server's answer is known
            if client.overlapping and not client.shared and not self._closed:
                client.shared = True  # from now on it takes ``overlap`` mails at once
                for _ in range(self.overlap - 1):
                    self._idle.put_nowait(client)
                self._turns += self.overlap - 1

    async def _transaction(
        self, client: Client, sender: str, recipients: list[str], message: bytes
    ) -> SmtpReply:
        client.message_sent = False  # aiosmtplib's sendmail never says: a drop is "unreachable"
        try:
            if canonical(message):  # notices are: no regex passes over them
                refused, reply = await client.send_canonical(sender, recipients, message)
            else:
                refused, reply = await client.sendmail(sender, recipients, message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            raise SmtpReplyError.from_reply(
                first.code, first.message, command="RCPT", recipient=first.recipient
            ) from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            raise _session_refusal(exc.code, exc.message, "MAIL") from exc
        except aiosmtplib.SMTPDataError as exc:
            raise SmtpReplyError.from_reply(exc.code, exc.message, command="DATA") from exc
        except aiosmtplib.SMTPHeloError as exc:
            raise _session_refusal(exc.code, exc.message, "EHLO") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code < 0:  # aiosmtplib's own: the bytes were no SMTP reply at all
                raise self._lost(client, exc) from exc
            raise SmtpReplyError.from_reply(exc.code, exc.message, command="SMTP") from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            if client.message_sent:
                waited = self.data_timeout or self.timeout
                raise self._unconfirmed(
                    f"no answer within {waited:g}s (PREAVISO_SMTP_DATA_TIMEOUT)"
                ) from exc
            raise SmtpTimeoutError(
                f"SMTP server {self.host}:{self.port} did not answer within "
                f"{self.timeout:g}s (PREAVISO_SMTP_TIMEOUT); it has not taken the message"
            ) from exc
        if refused:
            address, (code, text) = next(iter(refused.items()))
            raise SmtpReplyError.from_reply(code, text, command="RCPT", recipient=address)
        return SmtpReply(250, reply)

    async def _connect(self, client: Client) -> None:
        """Connect (TLS and AUTH included) within ``connect_timeout``, or say what to check."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                await client.connect(timeout=self.connect_timeout)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise SmtpAuthenticationError(exc.code, exc.message) from exc
        except TimeoutError as exc:
            raise SmtpUnreachableError(
                self.host,
                self.port,
                f"no answer within {self.connect_timeout:g}s (PREAVISO_CONNECT_TIMEOUT)",
                hint=self._tls_hint(exc) or "check the host, the port and any firewall between",
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise SmtpUnreachableError(
                self.host, self.port, f"server answered {exc.code} {exc.message}"
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SmtpUnreachableError(
                self.host, self.port, str(exc), hint=self._tls_hint(exc)
            ) from exc
        self.opened += 1

    def _tls_hint(self, exc: BaseException) -> str | None:
        cause = exc.__cause__
        text = f"{exc} {cause}".upper()
        if isinstance(exc, ssl.SSLError) or isinstance(cause, ssl.SSLError) or "TLS" in text:
            return (
                f"check PREAVISO_SMTP_TLS (now {self.tls.value}) matches the server, and its "
                f"certificate (PREAVISO_SMTP_VERIFY_TLS is {self.verify_tls})"
            )
        return None

    def _unconfirmed(self, what: str) -> SmtpUnconfirmedError:
        return SmtpUnconfirmedError(
            f"SMTP server {self.host}:{self.port} got the whole message, then {what}: "
            "it may have kept it"
        )

    def _lost(self, client: Client, exc: BaseException) -> TransportError:
        """The connection broke, or spoke no SMTP: once the whole message went, the server
        may have kept it (unconfirmed); before, it surely has not (unreachable)."""
        if client.message_sent:
            return self._unconfirmed(f"the connection failed ({exc})")
        return self._dropped(exc)

    def _dropped(self, exc: BaseException) -> SmtpUnreachableError:
        return SmtpUnreachableError(
            self.host,
            self.port,
            f"connection closed during the mail transaction ({exc})",
            hint="check the server's logs and limits (connections, rate, message size)",
        )

    async def _quit(self, client: Client) -> None:
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit(timeout=min(self.timeout, 5.0))
        client.close()


def sends_at_once(settings: Settings) -> int:
    """Mails in flight over the pool at most: two a connection with pipelining on, up to
    12 connections (whether the server lets them overlap is known only at EHLO)."""
    connections = settings.smtp_connections
    return connections * overlap(connections, settings.smtp_pipelining)
