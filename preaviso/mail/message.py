"""Assemble a notice's MIME bytes directly.

``email.message.EmailMessage`` builds a tree of objects and runs a generic folding policy
for every header: fine for one mail, a bottleneck for thousands. A notice always has the
same shape (multipart/alternative with a text and an HTML part), so we write that shape
out ourselves: several times faster, plain ASCII with CRLF everywhere, and byte-for-byte
deterministic, so a re-sent notice is the very same message (proof and dedup rely on it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import lru_cache
from types import MappingProxyType

from preaviso.mail.errors import HeaderInjectionError, InvalidAddressError, MessageError
from preaviso.schemas.base import UNSAFE_IN_LINE

__all__ = ["build_message", "from_line", "make_message_id", "parse_mailbox", "sender_address"]

_MAX_LINE = 78  # RFC 5322 "SHOULD"; the hard limit is 998
_HARD_LINE = 998
_MAX_WORD = 75  # RFC 2047: an encoded-word is at most 75 characters
_WORD_OVERHEAD = len("=?utf-8?q?") + len("?=")
_MIN_WORD = _WORD_OVERHEAD + 12  # room for the widest character, Q-encoded


_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_ATOM = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_ADDRESS = re.compile(rf"{_DOT_ATOM}@{_DOMAIN}")
_DOT_ATOM_RE = re.compile(_DOT_ATOM)
_DOMAIN_RE = re.compile(_DOMAIN)
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@{_DOMAIN}>")
_BARE_PHRASE = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*")
_MAILBOX = re.compile(r"(?P<name>[^<>]*)<(?P<address>[^<>]*)>")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ":"

_RESERVED = {
    name.lower(): name
    for name in (
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    )
}

# RFC 2047 5(3): inside a phrase only these bytes may stay literal in a Q-encoded word.
_Q_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q = tuple(chr(b) if b in _Q_LITERAL else "_" if b == 0x20 else f"={b:02X}" for b in range(256))

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def make_message_id(notice_id: str, domain: str) -> str:
    """``<notice_id@domain>``: the same notice always gets the same Message-ID."""
    _check_value("Message-ID", notice_id)
    _check_value("Message-ID", domain)
    if not _DOT_ATOM_RE.fullmatch(notice_id):
        raise MessageError(
            f"notice id {notice_id!r} cannot be the left part of a Message-ID",
            header="Message-ID",
        )
    if not _DOMAIN_RE.fullmatch(domain):
        raise MessageError(f"{domain!r} is not a valid domain name", header="Message-ID")
    return f"<{notice_id}@{domain}>"


def parse_mailbox(value: str, *, header: str = "From") -> tuple[str, str]:
    """Split ``Name <local@domain>`` (or a bare address) into display name and address.

    Meant for trusted configuration such as ``mail_from``, e.g. to get the envelope sender.
    """
    _check_value(header, value)
    match = _MAILBOX.fullmatch(value.strip())
    if match is None:
        name, address = "", value.strip()
    else:
        name, address = match["name"].strip(), match["address"].strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
    _check_address(header, address)
    return name, address


@lru_cache(maxsize=16)
def sender_address(mail_from: str) -> str:
    """The bare address of the ``mail_from`` setting, for the SMTP envelope: parsed as the
    From header is, so the two never disagree (once per value)."""
    return parse_mailbox(mail_from)[1]


def build_message(
    *,
    sender: str,
    recipient_name: str,
    recipient_email: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    extra_headers: Mapping[str, str] = _NO_HEADERS,
) -> bytes:
    """The complete RFC 5322 message: multipart/alternative, text/plain then text/html.

    ``sender`` is a mailbox such as ``"Preaviso <avisos@example.com>"``. Both parts are
    UTF-8, quoted-printable; their line breaks become CRLF (the canonical form of text
    in MIME), so they decode to ``text``/``html`` with ``\\n`` turned into ``\\r\\n``.
    The result is ASCII with CRLF line endings, and the same arguments always give the
    same bytes (the MIME boundary is derived from ``message_id``).

    Raises ``HeaderInjectionError`` for control characters in any header value,
    ``InvalidAddressError`` for an unusable address and ``MessageError`` otherwise.
    """
    _check_value("Message-ID", message_id)
    if not _MESSAGE_ID.fullmatch(message_id):
        raise MessageError(
            f"{message_id!r} is not a Message-ID of the form <left@domain>", header="Message-ID"
        )
    if date.tzinfo is None or date.utcoffset() is None:
        raise MessageError("the Date must be timezone-aware", header="Date")

    boundary = "=_" + hashlib.sha256(message_id.encode("ascii")).hexdigest()[:32]
    lines = [
        from_line(sender),
        _mailbox_line("To", recipient_name, recipient_email),
        _unstructured_line("Subject", subject),
        _date_line(date.replace(microsecond=0), date.utcoffset()),
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
    ]
    for name, value in extra_headers.items():
        if UNSAFE_IN_LINE.search(name):
            raise HeaderInjectionError(repr(name))  # repr: never echo a raw CR/LF
        if not _FIELD_NAME.fullmatch(name):
            raise MessageError(f"{name!r} is not a valid header name", header=name)
        if name.lower() in _RESERVED:
            own = _RESERVED[name.lower()]
            raise MessageError(f"{own} is set by build_message, not extra_headers", header=name)
        lines.append(_unstructured_line(name, value))
    lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')

    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    part_headers = b"; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    return b"".join(
        (
            "\r\n".join(lines).encode("ascii"),
            b"\r\n",
            delimiter,
            b"Content-Type: text/plain",
            part_headers,
            _quoted_printable("text", text),
            delimiter,
            b"Content-Type: text/html",
            part_headers,
            _quoted_printable("html", html),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )


# -- checks ------------------------------------------------------------------------------


def _check_value(header: str, value: str) -> None:
    if UNSAFE_IN_LINE.search(value):
        raise HeaderInjectionError(header)


def plain_address(address: str) -> bool:
    """True for a bare ``local@domain`` (dot-atom local part, LDH domain, RFC 5321's
    lengths): the only addresses Preaviso puts in a header or an envelope."""
    local, _, _ = address.rpartition("@")
    return len(address) <= 254 and len(local) <= 64 and _ADDRESS.fullmatch(address) is not None


def _check_address(header: str, address: str) -> None:
    _check_value(header, address)
    if not plain_address(address):
        raise InvalidAddressError(header, address)


# -- headers -----------------------------------------------------------------------------


@lru_cache(maxsize=16)
def from_line(sender: str) -> str:
    # The sender is the same for every notice: format it once.
    name, address = parse_mailbox(sender)
    return _mailbox_line("From", name, address)


def _mailbox_line(header: str, name: str, address: str) -> str:
    _check_address(header, address)
    _check_value(header, name)
    # Mail clients (and Python's parser) collapse spaces in a display name anyway; doing
    # it here keeps what we send and what they show the same.
    name = " ".join(name.split())
    if not name:
        return f"{header}: {address}"
    if name.isascii() and "=?" not in name:
        if _BARE_PHRASE.fullmatch(name):
            tokens = [name]
        else:
            tokens = ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    else:
        tokens = _phrase_words(name, _MAX_LINE - len(header) - 2)
    tokens.append(f"<{address}>")
    return _fold(header, tokens)


def _phrase_words(name: str, first: int) -> list[str]:
    """A display name as plain atoms and encoded-words, never two encoded-words in a row.

    Whitespace between adjacent encoded-words is dropped by RFC 2047 decoders but kept by
    Python's address parser; keeping ASCII words as atoms and each run of other words as
    one encoded-word satisfies both. Only a run too long for one encoded-word (75 chars)
    is split RFC-style, which Python then reads with an extra space at the split.
    """
    words = name.split(" ")
    tokens: list[str] = []
    run: list[str] = []
    for word in words:
        if _BARE_PHRASE.fullmatch(word) and "=?" not in word:
            if run:
                tokens += _encoded_words(" ".join(run), first if not tokens else _MAX_WORD)
                run = []
            tokens.append(word)
        else:
            run.append(word)
    if run:
        tokens += _encoded_words(" ".join(run), first if not tokens else _MAX_WORD)
    return tokens


@lru_cache(maxsize=256)
def _date_line(date: datetime, offset: timedelta | None) -> str:
    # Notices composed within the same second share it (the header has no fractions).
    # ``offset`` is part of the key: datetimes equal as instants but in other zones
    # are equal keys, yet their headers differ.
    return f"Date: {format_datetime(date)}"


@lru_cache(maxsize=256)
def _unstructured_line(header: str, value: str) -> str:
    # Cached: a change's subject is the same for all its customers of one language, and
    # encoding a non-ASCII one costs ~25 µs, half of building the whole message.
    _check_value(header, value)
    if value.isascii() and "=?" not in value and "  " not in value and value == value.strip():
        # Plain ASCII goes as is; folding at its single spaces unfolds back exactly.
        return _fold(header, value.split(" ") if value else [])
    # Anything else becomes encoded-words: they keep every space and character exactly.
    return _fold(header, _encoded_words(value, _MAX_LINE - len(header) - 2))


def _fold(header: str, tokens: list[str]) -> str:
    """Join tokens with spaces, breaking onto a new line where one would pass 78 chars."""
    out = [header, ":"]
    width = len(header) + 1
    for token in tokens:
        if width + 1 + len(token) > _MAX_LINE and width > len(header) + 1:
            out.append("\r\n ")
            width = 1
        else:
            out.append(" ")
            width += 1
        out.append(token)
        width += len(token)
        if width > _HARD_LINE:
            raise MessageError(f"{header} has a word too long for one line", header=header)
    return "".join(out)


def _encoded_words(value: str, first: int) -> list[str]:
    """RFC 2047 UTF-8 encoded-words, each ≤ 75 chars (the first ≤ ``first``).

    Q for mostly-Latin text (it stays readable in a raw .eml), B where Q would be more
    than twice as long (Cyrillic, CJK, ...). A character is never split across words,
    as RFC 2047 requires.
    """
    data = value.encode("utf-8")
    q_length = sum(len(_Q[byte]) for byte in data)
    b_length = (len(data) + 2) // 3 * 4
    first = min(first, _MAX_WORD) if first >= _MIN_WORD else _MAX_WORD
    if q_length + _WORD_OVERHEAD <= first and q_length <= 2 * b_length:
        return ["=?utf-8?q?" + "".join(_Q[byte] for byte in data) + "?="]
    if b_length + _WORD_OVERHEAD <= first:  # one word beats readable words
        return ["=?utf-8?b?" + base64.b64encode(data).decode("ascii") + "?="]
    return _split_words(value, "q" if q_length <= 2 * b_length else "b", first)


def _split_words(value: str, encoding: str, first: int) -> list[str]:
    words: list[str] = []
    budget = first - _WORD_OVERHEAD
    chunk: list[bytes] = []
    used = 0
    for char in value:
        encoded = char.encode("utf-8")
        if encoding == "q":
            cost = sum(len(_Q[byte]) for byte in encoded)
            fits = used + cost <= budget
        else:
            cost = len(encoded)
            fits = (used + cost + 2) // 3 * 4 <= budget
        if not fits and chunk:
            words.append(_word(b"".join(chunk), encoding))
            chunk, used, budget = [], 0, _MAX_WORD - _WORD_OVERHEAD
        chunk.append(encoded)
        used += cost
    if chunk:
        words.append(_word(b"".join(chunk), encoding))
    return words


def _word(data: bytes, encoding: str) -> str:
    if encoding == "q":
        return "=?utf-8?q?" + "".join(_Q[byte] for byte in data) + "?="
    return "=?utf-8?b?" + base64.b64encode(data).decode("ascii") + "?="


# -- bodies ------------------------------------------------------------------------------


def _quoted_printable(part: str, body: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line breaks and lines of at most 76 chars.

    Encoded a line at a time, each as the whole text would encode it (quoted-printable
    starts afresh after every line break; what ends a line is all it looks at), so the
    lines a template gives every customer alike are encoded once, not once per notice.
    """
    *lines, last = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    try:
        return b"".join([*[_qp_line(line, True) for line in lines], _qp_line(last, False)])
    except UnicodeEncodeError as exc:
        raise MessageError(f"the {part} part is not valid Unicode: {exc.reason}") from exc


@lru_cache(maxsize=4096)
def _qp_line(line: str, broken: bool) -> bytes:
    """One line, and the line break after it if ``broken``, with CRLF line breaks."""
    data = (line + "\n" if broken else line).encode("utf-8")
    # b2a_qp keeps LF for the line break and its own soft breaks: made CRLF here.
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")
