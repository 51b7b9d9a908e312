"""build_message: the MIME bytes of a notice, read back the way a mail client would."""

from __future__ import annotations

import binascii
import email
import email.policy
import random
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any, cast

import pytest

from preaviso.mail import (
    HeaderInjectionError,
    InvalidAddressError,
    MessageError,
    build_message,
    make_message_id,
    parse_mailbox,
    sender_address,
)

DATE = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
MESSAGE_ID = "<6f1d8a52-3c1e-4d57-9a43-7e1c2b9d0a11@preaviso.example.com>"
TEXT = "Estimado José Núñez:\n\nLa lavadora Ñandú 3000 deja de fabricarse.\n"
HTML = "<p>Estimado <b>José Núñez</b>:</p>\n<p>La lavadora Ñandú 3000 deja de fabricarse.</p>"


def build(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "sender": "Preaviso <avisos@example.com>",
        "recipient_name": "José Núñez",
        "recipient_email": "jose.nunez@example.com",
        "subject": "Aviso: fin de fabricación",
        "text": TEXT,
        "html": HTML,
        "message_id": MESSAGE_ID,
        "date": DATE,
    }
    fields.update(overrides)
    return build_message(**fields)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


# -- structure ---------------------------------------------------------------------------


def test_it_is_multipart_alternative_with_text_then_html() -> None:
    message = parse(build())

    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert message.defects == []


def test_both_parts_decode_to_the_original_text_with_crlf_line_breaks() -> None:
    text, html = cast(list[EmailMessage], list(parse(build()).iter_parts()))

    assert text.get_content() == crlf(TEXT)
    assert html.get_content() == crlf(HTML)


def test_a_body_already_in_crlf_decodes_exactly() -> None:
    body = "línea uno\r\nlínea dos  \r\n\r\n=?no?= = 100% \t tab\r\n.\r\n"
    text, _ = cast(list[EmailMessage], list(parse(build(text=body)).iter_parts()))

    assert text.get_content() == body


def test_long_body_lines_are_soft_wrapped_and_rejoined() -> None:
    body = "Ñ" * 300 + " fin\n" + "x" * 500
    raw = build(text=body)
    text, _ = cast(list[EmailMessage], list(parse(raw).iter_parts()))

    assert text.get_content() == crlf(body)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


def test_bodies_are_the_standard_quoted_printable_of_the_whole_text() -> None:
    rng = random.Random(5)
    pieces = ["a", "ñ", " ", "\t", "=", ".", "x" * 70, "\n", "\r\n", "\r", "🎉", "From "]
    for _ in range(300):
        body = "".join(rng.choices(pieces, k=rng.randrange(30)))
        raw = build(text=body, html="<p>same</p>")
        part = raw.split(b"quoted-printable\r\n\r\n", 1)[1].split(b"\r\n--=_", 1)[0]
        lf = body.replace("\r\n", "\n").replace("\r", "\n").encode()
        reference = binascii.b2a_qp(lf, quotetabs=False, istext=True, header=False)
        assert part == reference.replace(b"\n", b"\r\n"), repr(body)


def test_the_message_is_ascii_with_crlf_line_endings_everywhere() -> None:
    raw = build(subject="Año nuevo ☃ 日本語", text="a\nb\rc\r\nd", html="<p>\n</p>")

    assert raw.isascii()
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.endswith(b"--\r\n")


def test_header_lines_stay_within_78_characters() -> None:
    raw = build(
        recipient_name="María de los Ángeles Fernández-Castañeda y Gutiérrez de la Concha",
        subject="Aviso: fin de fabricación de la lavadora Ñandú 3000 y de todos sus "
        "recambios, accesorios y consumibles oficiales a partir del año próximo",
    )
    head = raw.split(b"\r\n\r\n", 1)[0]

    assert max(len(line) for line in head.split(b"\r\n")) <= 78


# -- headers -----------------------------------------------------------------------------


def test_headers_decode_to_the_original_unicode() -> None:
    message = parse(build())

    assert message["Subject"] == "Aviso: fin de fabricación"
    assert message["To"].addresses[0].display_name == "José Núñez"
    assert message["To"].addresses[0].addr_spec == "jose.nunez@example.com"
    assert message["From"].addresses[0].display_name == "Preaviso"
    assert message["From"].addresses[0].addr_spec == "avisos@example.com"
    assert message["Message-ID"] == MESSAGE_ID
    assert message["MIME-Version"] == "1.0"


def test_non_ascii_header_text_is_sent_as_encoded_words() -> None:
    head = build().split(b"\r\n\r\n", 1)[0]

    assert b"Subject: =?utf-8?q?Aviso=3A_fin_de_fabricaci=C3=B3n?=" in head
    assert b"To: =?utf-8?q?Jos=C3=A9_N=C3=BA=C3=B1ez?= <jose.nunez@example.com>" in head


def test_plain_ascii_headers_are_left_readable() -> None:
    head = build(subject="Product notice", recipient_name="Jane Doe").split(b"\r\n\r\n")[0]

    assert b"Subject: Product notice\r\n" in head
    assert b"To: Jane Doe <jose.nunez@example.com>\r\n" in head


def test_the_date_header_is_rfc_5322_and_keeps_the_offset() -> None:
    madrid = datetime(2025, 3, 1, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    message = parse(build(date=madrid))

    assert message["Date"] == "Sat, 01 Mar 2025 10:30:00 +0100"
    assert message["Date"].datetime == madrid


def test_the_same_instant_in_two_zones_keeps_each_zone() -> None:
    # Equal datetimes in other zones: a cache keyed on the instant alone mixes them up.
    utc = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
    madrid = utc.astimezone(timezone(timedelta(hours=1)))

    assert parse(build(date=utc))["Date"] == "Sat, 01 Mar 2025 09:30:15 +0000"
    assert parse(build(date=madrid))["Date"] == "Sat, 01 Mar 2025 10:30:15 +0100"


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "Plain ASCII",
        "  leading and trailing spaces  ",
        "double  spaces   inside",
        "looks encoded =?utf-8?q?x?= but is not",
        'under_score, question? equals= colon: (paren) "quote"',
        "日本語の件名がとても長い場合でも正しく折り返されること" * 2,
        "Привет, это уведомление о прекращении производства модели",  # noqa: RUF001
        "emoji 🎉 and ☃ mixed with ASCII " * 3,
        "x" * 200,
        " ".join(["palabra"] * 40),
    ],
)
def test_any_subject_decodes_to_itself(subject: str) -> None:
    assert parse(build(subject=subject))["Subject"] == subject


@pytest.mark.parametrize(
    "name",
    [
        "Jane Doe",
        "Núñez, José",
        'Jane "JD" Doe',
        "back\\slash",
        "J. R. R. Tolkien",
        "=?utf-8?q?not_encoded?=",
        "María de los Ángeles Fernández-Castañeda y Gutiérrez de la Concha",
        "李小龍",
    ],
)
def test_any_display_name_decodes_to_itself(name: str) -> None:
    address = parse(build(recipient_name=name))["To"].addresses[0]

    assert address.display_name == name
    assert address.addr_spec == "jose.nunez@example.com"


@pytest.mark.parametrize("name", ["  José   Núñez ", "Jane   Doe", " Jane Doe "])
def test_spaces_in_a_display_name_are_collapsed_as_clients_show_them(name: str) -> None:
    assert parse(build(recipient_name=name))["To"].addresses[0].display_name == " ".join(
        name.split()
    )


def test_without_a_name_the_recipient_is_a_bare_address() -> None:
    raw = build(recipient_name="")

    assert b"\r\nTo: jose.nunez@example.com\r\n" in raw
    assert parse(raw)["To"].addresses[0].addr_spec == "jose.nunez@example.com"


def test_random_unicode_round_trips_through_subject_and_name() -> None:
    alphabet = "abcXYZ019 _=?:;,.<>\"'()[]\\ñÑáéíóúü€日本語Жж🎉"
    rng = random.Random(20250301)
    for _ in range(300):
        subject = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120)))
        name = subject[:10]  # short enough for one encoded-word
        message = parse(build(subject=subject, recipient_name=name))
        assert message["Subject"] == subject
        assert message["To"].addresses[0].display_name == " ".join(name.split())


def test_a_name_too_long_for_one_encoded_word_follows_rfc_2047() -> None:
    # RFC 2047 drops the whitespace between adjacent encoded-words; Python's address
    # parser keeps it, so decode the way mail clients do.
    name = "Ñ" * 60
    raw = build(recipient_name=name)
    to_value = raw.split(b"\r\nTo: ", 1)[1].split(b" <jose", 1)[0].decode("ascii")

    assert to_value.count("=?utf-8?") > 1
    assert str(make_header(decode_header(to_value))) == name


def test_extra_headers_are_added_and_encoded_when_needed() -> None:
    message = parse(
        build(extra_headers={"X-Preaviso-Notice": "abc-123", "X-Producto": "Lavadora Ñandú"})
    )

    assert message["X-Preaviso-Notice"] == "abc-123"
    assert message["X-Producto"] == "Lavadora Ñandú"


def test_extra_headers_cannot_replace_the_builders_own() -> None:
    with pytest.raises(MessageError, match="Subject"):
        build(extra_headers={"subject": "other"})


# -- determinism -------------------------------------------------------------------------


def test_the_same_notice_gives_the_same_bytes() -> None:
    assert build() == build()


def test_the_boundary_comes_from_the_message_id() -> None:
    other = build(message_id="<another-notice@preaviso.example.com>")

    assert parse(build()).get_boundary() != parse(other).get_boundary()
    assert parse(build()).get_boundary() == parse(build(subject="x")).get_boundary()


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\r\nBcc: evil@example.com", "\n", "\r", "\x00", "\t", "\x85"])
@pytest.mark.parametrize(
    ("field", "header"),
    [
        ("subject", "Subject"),
        ("recipient_name", "To"),
        ("recipient_email", "To"),
        ("sender", "From"),
        ("message_id", "Message-ID"),
    ],
)
def test_control_characters_in_any_header_are_refused(field: str, header: str, bad: str) -> None:
    value = {
        "subject": "Aviso",
        "recipient_name": "José",
        "recipient_email": "jose@example.com",
        "sender": "Preaviso <avisos@example.com>",
        "message_id": MESSAGE_ID,
    }[field]

    with pytest.raises(HeaderInjectionError) as caught:
        build(**{field: value + bad})
    assert caught.value.header == header
    assert header in str(caught.value)


@pytest.mark.parametrize("bad", ["\u2028", "\u2029", "\ud800"])
def test_unicode_line_separators_and_lone_surrogates_are_refused(bad: str) -> None:
    with pytest.raises(HeaderInjectionError):
        build(subject=f"Aviso{bad}Bcc: evil@example.com")


@pytest.mark.parametrize("bidi", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200f", "\u061c"])
@pytest.mark.parametrize("field", ["subject", "recipient_name"])
def test_bidirectional_controls_never_reach_a_subject_or_a_display_name(
    field: str, bidi: str
) -> None:
    # "\u202e" shows "Bank <gpj.exe>" as "Bank <exe.jpg>": a name that reads as another.
    with pytest.raises(HeaderInjectionError):
        build(**{field: f"Aviso {bidi}gpj.exe"})


def test_extra_header_values_and_names_are_checked_too() -> None:
    with pytest.raises(HeaderInjectionError) as caught:
        build(extra_headers={"X-Note": "ok\r\nBcc: evil@example.com"})
    assert caught.value.header == "X-Note"

    with pytest.raises(HeaderInjectionError):
        build(extra_headers={"X-Note\r\nBcc": "x"})
    with pytest.raises(MessageError, match="header name"):
        build(extra_headers={"X Note:": "x"})


@pytest.mark.parametrize(
    "address",
    [
        "",
        "jose",
        "jose@",
        "@example.com",
        "jose@@example.com",
        "jo se@example.com",
        "<jose@example.com>",
        "josé@example.com",
        "jose@-example.com",
        "a" * 65 + "@example.com",
    ],
)
def test_invalid_recipient_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidAddressError) as caught:
        build(recipient_email=address)
    assert caught.value.header == "To"
    assert caught.value.address == address


@pytest.mark.parametrize("message_id", ["no-brackets@example.com", "<no-at-sign>", "<a b@c.d>"])
def test_a_malformed_message_id_is_refused(message_id: str) -> None:
    with pytest.raises(MessageError, match="Message-ID"):
        build(message_id=message_id)


def test_a_naive_date_is_refused() -> None:
    with pytest.raises(MessageError, match="timezone-aware"):
        build(date=datetime(2025, 3, 1, 9, 30))


def test_an_unencodable_body_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="html"):
        build(html="bad \udcff surrogate")


def test_message_errors_are_value_errors() -> None:
    assert issubclass(HeaderInjectionError, ValueError)
    assert issubclass(InvalidAddressError, ValueError)


# -- make_message_id and parse_mailbox ---------------------------------------------------


def test_make_message_id_is_deterministic() -> None:
    first = make_message_id("6f1d8a52-3c1e-4d57-9a43-7e1c2b9d0a11", "preaviso.example.com")

    assert first == "<6f1d8a52-3c1e-4d57-9a43-7e1c2b9d0a11@preaviso.example.com>"
    assert first == make_message_id("6f1d8a52-3c1e-4d57-9a43-7e1c2b9d0a11", "preaviso.example.com")


@pytest.mark.parametrize(
    ("notice_id", "domain"),
    [
        ("a b", "example.com"),
        ("a>b", "example.com"),
        ("", "example.com"),
        ("a", "exa mple.com"),
        ("a", "example..com"),
        ("a", ""),
    ],
)
def test_make_message_id_refuses_unsafe_parts(notice_id: str, domain: str) -> None:
    with pytest.raises(MessageError):
        make_message_id(notice_id, domain)


def test_make_message_id_refuses_injection() -> None:
    with pytest.raises(HeaderInjectionError):
        make_message_id("abc\r\nBcc: evil@example.com", "example.com")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Preaviso <avisos@example.com>", ("Preaviso", "avisos@example.com")),
        ('"Preaviso, S.A." <avisos@example.com>', ("Preaviso, S.A.", "avisos@example.com")),
        ("avisos@example.com", ("", "avisos@example.com")),
        (
            "  Atención al cliente  <avisos@example.com> ",
            ("Atención al cliente", "avisos@example.com"),
        ),
    ],
)
def test_parse_mailbox(value: str, expected: tuple[str, str]) -> None:
    assert parse_mailbox(value) == expected


def test_a_sender_with_a_quoted_name_round_trips() -> None:
    sender = parse(build(sender='"Preaviso, S.A." <avisos@example.com>'))["From"].addresses[0]

    assert sender.display_name == "Preaviso, S.A."
    assert sender.addr_spec == "avisos@example.com"


@pytest.mark.parametrize(
    "mail_from", ['"Preaviso, S.A." <avisos@example.com>', "avisos@example.com"]
)
def test_the_envelope_sender_is_the_from_headers_address(mail_from: str) -> None:
    header = parse(build(sender=mail_from))["From"].addresses[0].addr_spec

    assert sender_address(mail_from) == header == "avisos@example.com"


def test_an_unparsable_sender_is_refused_not_sent_as_is() -> None:
    with pytest.raises(InvalidAddressError):
        sender_address("Preaviso avisos at example.com")
