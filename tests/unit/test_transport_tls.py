"""SmtpTransport over TLS: implicit TLS, STARTTLS and certificate checks, against a test server."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from preaviso.mail import SmtpUnreachableError
from tests.unit.smtp_servers import MESSAGE, SENDER, Server, start_server, transport_for


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.both_loops
@pytest.mark.parametrize("pipelining", [False, True], ids=["one-command-at-a-time", "pipelining"])
@pytest.mark.parametrize("tls", ["tls", "starttls"], ids=["implicit TLS", "STARTTLS"])
async def test_the_message_goes_over_tls(
    certificate: tuple[Path, Path], tls: str, pipelining: bool
) -> None:
    handler = Server(pipelining=pipelining)
    context = server_context(certificate)
    listener = await (
        start_server(handler, ssl=context)
        if tls == "tls"
        else start_server(handler, tls_context=context, require_starttls=True)
    )
    try:
        async with transport_for(handler, tls=tls, verify_tls=False) as transport:
            await transport.send(SENDER, ["jose@example.com"], MESSAGE)
    finally:
        listener.close()

    assert handler.messages == [MESSAGE]


async def test_an_untrusted_certificate_is_refused_with_a_hint(
    certificate: tuple[Path, Path],
) -> None:
    handler = Server()
    listener = await start_server(handler, ssl=server_context(certificate))
    try:
        transport = transport_for(handler, tls="tls", verify_tls=True)
        with pytest.raises(SmtpUnreachableError, match="PREAVISO_SMTP_VERIFY_TLS"):
            await transport.check()
    finally:
        listener.close()
