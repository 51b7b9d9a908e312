"""The naive script, the baseline of the 8x target, mails what the worker's notices say.

Its mails used to be a two-line placeholder, a sixth of a notice's size; a baseline
doing less work than the job flatters it. The reference is the worker's own notice,
read back with the standard library's parser, not with anything of the harness.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

from bench.baselines import placeholder_mails
from bench.directory import generate
from bench.phases import notice_contents
from preaviso.audience import Candidate, policy_impacts
from preaviso.compose import compose_notice
from preaviso.devtools.dataset import policy_for_everyone
from preaviso.render import Renderer
from preaviso.schemas.events import CustomerUpserted, PolicyChanged
from preaviso.schemas.records import Impact
from preaviso.settings import Settings
from preaviso.streams.codecs import decode


def _worker_notices(
    settings: Settings, people: Sequence[CustomerUpserted], event: PolicyChanged
) -> dict[str, bytes]:
    """Each customer's notice as the worker composes it: the exact bytes it sends."""
    candidates = [Candidate(p.customer_id, p.region, 0) for p in people]
    impacts = [decode(Impact, r.value) for r in policy_impacts(event, candidates, 0)]
    renderer, now = Renderer(settings.company_name), datetime.now(UTC)
    by_id = {p.customer_id: p for p in people}
    notices = (compose_notice(i, by_id[i.customer_id], renderer, settings, now) for i in impacts)
    return {n.customer_id: n.mime.encode("ascii") for n in notices}


def _lines(body: str) -> list[str]:
    """A body's lines, whatever their breaks (the notice's are CRLF on the wire)."""
    return body.strip().splitlines()


def _as_the_script_builds_it(subject: str, text: str, html: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "avisos@example.com"
    msg["To"] = "Ana <ana@example.com>"
    msg["Subject"] = subject
    msg["Message-ID"] = "<naive-0@bench.example.com>"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return bytes(msg)


def test_the_naive_script_mails_each_customer_the_subject_text_and_html_of_its_notice() -> None:
    settings = Settings()
    people = generate(12).customers
    event = policy_for_everyone("naive-check")
    notices = _worker_notices(settings, people, event)

    mails = notice_contents(settings.company_name, people, event)

    assert len(mails) == len(people) == len(notices)
    for person, (name, address, subject, text, html) in zip(people, mails, strict=True):
        sent = message_from_bytes(notices[person.customer_id], policy=policy.default)
        assert (name, address) == (person.name, str(person.email))
        assert subject == sent["Subject"]
        assert _lines(text) == _lines(sent.get_body(("plain",)).get_content())  # type: ignore[union-attr]
        assert _lines(html) == _lines(sent.get_body(("html",)).get_content())  # type: ignore[union-attr]


def test_the_naive_script_mail_is_about_a_notice_in_size_the_old_placeholder_was_not() -> None:
    settings = Settings()
    people = generate(12).customers
    event = policy_for_everyone("naive-size")
    notice = len(next(iter(_worker_notices(settings, people[:1], event).values())))

    [(_, _, *content)] = notice_contents(settings.company_name, people[:1], event)
    [(_, _, *placeholder)] = placeholder_mails(people[:1])

    assert 0.7 < len(_as_the_script_builds_it(*content)) / notice < 1.3
    assert len(_as_the_script_builds_it(*placeholder)) / notice < 0.4
