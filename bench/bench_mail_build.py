"""Micro-benchmark: build_message against the stdlib ways of making the same notice.

Run: ``.venv/bin/python bench/bench_mail_build.py [--seconds 2]``. Not a test: it prints
messages per second for each builder and how much faster build_message is.
"""

from __future__ import annotations

import argparse
import email.policy
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import charset as email_charset
from email.header import Header
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr
from typing import Any

from preaviso.mail import build_message, make_message_id

SENDER = "Preaviso <avisos@example.com>"
NAME = "José Núñez"
ADDRESS = "jose.nunez@example.com"
SUBJECT = "Aviso: fin de fabricación de la lavadora Ñandú 3000"
DATE = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
TEXT = (
    "Estimado José Núñez:\n\n"
    "Le informamos de que la fabricación de la lavadora Ñandú 3000 terminará el "
    "30 de junio de 2025. Los recambios seguirán disponibles durante diez años.\n\n"
    "Atentamente,\nEl equipo de atención al cliente\n"
) * 3
HTML = (
    "<!doctype html><html><body><p>Estimado <b>José Núñez</b>:</p>"
    "<p>Le informamos de que la fabricación de la lavadora Ñandú 3000 terminará el "
    "30 de junio de 2025. Los recambios seguirán disponibles durante diez años.</p>"
    "<p>Atentamente,<br>El equipo de atención al cliente</p></body></html>\n"
) * 3

# Typed Any: MIMEText takes a Charset at run time, though typeshed says str.
_UTF8_QP: Any = email_charset.Charset("utf-8")
_UTF8_QP.body_encoding = email_charset.QP
_UTF8_QP.header_encoding = email_charset.QP
_COMPAT32_CRLF = email.policy.compat32.clone(linesep="\r\n")


def with_builder(i: int) -> bytes:
    return build_message(
        sender=SENDER,
        recipient_name=NAME,
        recipient_email=ADDRESS,
        subject=SUBJECT,
        text=TEXT,
        html=HTML,
        message_id=make_message_id(f"notice-{i}", "preaviso.example.com"),
        date=DATE,
    )


def with_email_message(i: int) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = SENDER
    msg["To"] = formataddr((NAME, ADDRESS))
    msg["Subject"] = SUBJECT
    msg["Date"] = format_datetime(DATE)
    msg["Message-ID"] = f"<notice-{i}@preaviso.example.com>"
    msg.set_content(TEXT, cte="quoted-printable")
    msg.add_alternative(HTML, subtype="html", cte="quoted-printable")
    return msg.as_bytes()


def with_email_mime(i: int) -> bytes:
    msg = MIMEMultipart("alternative")
    msg["From"] = SENDER
    msg["To"] = formataddr((NAME, ADDRESS), charset="utf-8")
    msg["Subject"] = Header(SUBJECT, "utf-8").encode()
    msg["Date"] = format_datetime(DATE)
    msg["Message-ID"] = f"<notice-{i}@preaviso.example.com>"
    msg.attach(MIMEText(TEXT, "plain", _UTF8_QP))
    msg.attach(MIMEText(HTML, "html", _UTF8_QP))
    return msg.as_bytes(policy=_COMPAT32_CRLF)


def rate(build: Callable[[int], bytes], seconds: float) -> float:
    """Messages per second, over at least ``seconds`` of wall time."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            build(count)
            count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per builder")
    args = parser.parse_args()

    builders = {
        "preaviso build_message": with_builder,
        "email.mime (compat32)": with_email_mime,
        "EmailMessage (policy.SMTP)": with_email_message,
    }
    for name, build in builders.items():
        print(f"{name:28} {len(build(0)):6} bytes")
    rates = {name: rate(build, args.seconds) for name, build in builders.items()}
    ours = rates["preaviso build_message"]
    print()
    for name, value in rates.items():
        print(f"{name:28} {value:9,.0f} msgs/s   build_message is {ours / value:5.1f}x")


if __name__ == "__main__":
    main()
