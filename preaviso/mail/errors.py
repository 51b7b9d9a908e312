"""Every exception the mail package raises, so callers can catch exactly what they handle.

Two families: ``MessageError`` (a notice cannot become a safe message: a bug or bad data,
never worth retrying) and ``TransportError`` (talking to the SMTP server went wrong).
Within the latter, only ``SmtpReplyError`` is the server's verdict on one message; the
others say the server or its configuration is at fault, so a notice must not be marked
rejected because of them.
"""

from __future__ import annotations

__all__ = [
    "HeaderInjectionError",
    "InvalidAddressError",
    "MailError",
    "MessageError",
    "SmtpAuthenticationError",
    "SmtpPermanentError",
    "SmtpReplyError",
    "SmtpSenderRefusedError",
    "SmtpTemporaryError",
    "SmtpTimeoutError",
    "SmtpUnconfirmedError",
    "SmtpUnreachableError",
    "TransportError",
]


class MailError(Exception):
    """Base of every error raised by ``preaviso.mail``."""


# -- building messages -------------------------------------------------------------------


class MessageError(MailError, ValueError):
    """The inputs cannot make a valid message; ``header`` names the culprit when known."""

    def __init__(self, message: str, *, header: str | None = None) -> None:
        super().__init__(message)
        self.header = header


class HeaderInjectionError(MessageError):
    """A header value holds CR, LF or another control character.

    Refused outright rather than stripped: such a value is either a bug or an attack,
    and silently "fixing" it would hide both.
    """

    def __init__(self, header: str) -> None:
        super().__init__(
            f"{header} header value contains a control character (CR, LF, TAB, ...)",
            header=header,
        )


class InvalidAddressError(MessageError):
    """An email address that is not a plain ``local@domain`` we can put in a header."""

    def __init__(self, header: str, address: str) -> None:
        super().__init__(f"{header}: {address!r} is not a valid email address", header=header)
        self.address = address


# -- sending messages --------------------------------------------------------------------


class TransportError(MailError):
    """Sending failed; see the subclasses for whether the message or the server is at fault."""


class SmtpUnreachableError(TransportError):
    """No usable connection to the SMTP server: refused, timed out, TLS failed, or dropped."""

    def __init__(self, host: str, port: int, reason: str, *, hint: str | None = None) -> None:
        hint = hint or (
            "check PREAVISO_SMTP_HOST and PREAVISO_SMTP_PORT, and that the server is running"
        )
        super().__init__(f"cannot reach SMTP server {host}:{port}: {reason}; {hint}")
        self.host = host
        self.port = port
        self.reason = reason


class SmtpTimeoutError(TransportError):
    """A command got no answer in time, before the message was sent: the server has not
    got it."""


class SmtpUnconfirmedError(TransportError):
    """The whole message went to the server, and no answer came back (a timeout, a dropped
    connection, bytes that are not an SMTP reply): the server may have kept it, so sending
    it again may deliver it twice."""


class SmtpAuthenticationError(TransportError):
    """The server refused our credentials: a configuration error, not a verdict on a mail."""

    def __init__(self, code: int, reply: str) -> None:
        super().__init__(
            f"SMTP authentication failed ({code} {reply}); "
            "check PREAVISO_SMTP_USERNAME and PREAVISO_SMTP_PASSWORD"
        )
        self.code = code
        self.reply = reply


class SmtpSenderRefusedError(TransportError):
    """The server refuses the session or the sender for good (a 5xx to EHLO, or to MAIL
    FROM other than 552 for the size): the same for every mail, a configuration error,
    not a verdict on one message."""

    def __init__(self, code: int, reply: str, *, command: str) -> None:
        super().__init__(
            f"SMTP {command} refused: {code} {reply}; check PREAVISO_MAIL_FROM and that the "
            "server relays for this host"
        )
        self.code = code
        self.reply = reply
        self.command = command


class SmtpReplyError(TransportError):
    """The server answered a mail transaction command with an error code.

    ``command`` is the refused step (``MAIL``, ``RCPT``, ``DATA``, ...); ``recipient`` is
    set when the refusal was for one recipient (``RCPT``).
    """

    def __init__(
        self, code: int, reply: str, *, command: str, recipient: str | None = None
    ) -> None:
        target = f" for {recipient}" if recipient else ""
        super().__init__(f"SMTP {command} refused{target}: {code} {reply}")
        self.code = code
        self.reply = reply
        self.command = command
        self.recipient = recipient

    @staticmethod
    def from_reply(
        code: int, reply: str, *, command: str, recipient: str | None = None
    ) -> SmtpReplyError:
        """The temporary (4xx) or permanent (other) error for a reply code."""
        cls = SmtpTemporaryError if 400 <= code < 500 else SmtpPermanentError
        return cls(code, reply, command=command, recipient=recipient)


class SmtpTemporaryError(SmtpReplyError):
    """A 4xx reply: the server may accept the same message later, so retry."""


class SmtpPermanentError(SmtpReplyError):
    """A 5xx reply: the server will not take this message; retrying will not help."""
