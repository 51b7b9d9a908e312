"""Mail: build a notice's MIME bytes and send them over a pooled SMTP transport."""

from preaviso.mail.errors import (
    HeaderInjectionError,
    InvalidAddressError,
    MailError,
    MessageError,
    SmtpAuthenticationError,
    SmtpPermanentError,
    SmtpReplyError,
    SmtpSenderRefusedError,
    SmtpTemporaryError,
    SmtpTimeoutError,
    SmtpUnconfirmedError,
    SmtpUnreachableError,
    TransportError,
)
from preaviso.mail.memory import MemoryTransport, SentMessage
from preaviso.mail.message import build_message, make_message_id, parse_mailbox, sender_address
from preaviso.mail.transport import SmtpReply, SmtpTransport, Transport

__all__ = [
    "HeaderInjectionError",
    "InvalidAddressError",
    "MailError",
    "MemoryTransport",
    "MessageError",
    "SentMessage",
    "SmtpAuthenticationError",
    "SmtpPermanentError",
    "SmtpReply",
    "SmtpReplyError",
    "SmtpSenderRefusedError",
    "SmtpTemporaryError",
    "SmtpTimeoutError",
    "SmtpTransport",
    "SmtpUnconfirmedError",
    "SmtpUnreachableError",
    "Transport",
    "TransportError",
    "build_message",
    "make_message_id",
    "parse_mailbox",
    "sender_address",
]
