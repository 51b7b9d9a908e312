"""Settings refuse a bad value at start, naming the variable and how to write it."""

from __future__ import annotations

import pytest
import typer

from preaviso.cli import load_settings
from preaviso.settings import Settings


@pytest.mark.parametrize(
    "value",
    ["Preaviso avisos at example.com", "Preaviso <avisos@example.com>\r\nBcc: x@example.com"],
)
def test_a_mail_from_that_is_not_a_mailbox_stops_the_worker_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv("PREAVISO_MAIL_FROM", value)
    with pytest.raises(typer.Exit) as exited:
        load_settings()
    assert exited.value.exit_code == 2
    err = capsys.readouterr().err
    assert "setting PREAVISO_MAIL_FROM" in err
    assert "Name <address@domain>" in err


@pytest.mark.parametrize(
    "value", ["Preaviso <avisos@example.com>", '"Avisos, S.A." <a@example.com>', "a@example.com"]
)
def test_a_mailbox_or_a_bare_address_is_accepted(value: str) -> None:
    assert Settings(mail_from=value).mail_from == value


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("PREAVISO_SMTP_UNRECORDED_MAX", "0", "greater than or equal to 1"),
        ("PREAVISO_SMTP_UNRECORDED_MAX", "lots", "valid integer"),
        ("PREAVISO_SMTP_PIPELINING", "sometimes", "valid boolean"),
        ("PREAVISO_SMTP_DATA_TIMEOUT", "0", "greater than 0"),
        ("PREAVISO_SMTP_DATA_TIMEOUT", "ten minutes", "valid number"),
        ("PREAVISO_COMPOSE_NICE", "20", "less than or equal to 19"),
        ("PREAVISO_COMPOSE_NICE", "-5", "greater than or equal to 0"),
    ],
)
def test_a_bad_delivery_setting_stops_the_worker_at_start_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    says: str,
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(typer.Exit) as exited:
        load_settings()
    assert exited.value.exit_code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"setting {name}" in err
    assert says in err
