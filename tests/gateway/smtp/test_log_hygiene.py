"""J2: no word of a message body reaches the logs, even when a client streams it after a
refused transaction (the SMTP library then reads each body line as an unknown command)."""

from __future__ import annotations

import logging

from caducee.directory.identifiers import ins_key
from caducee.gateway.logs import REDACTED, ClientTextFilter
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

from .transcript import Transcript

BODY = [
    "Zanzibarquux diagnostic confidentiel",
    "Xylophonique traitement hebdomadaire",
    "Quetzalcoatlite resultat positif",
]


def test_j2_body_streamed_after_a_refused_transaction_is_not_logged(
    gateway: ServedGateway,
) -> None:
    nir13 = "1800175123456"
    t = Transcript("127.0.0.1", gateway.ports["smtp"])
    assert t.reply().startswith("220 ")
    t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    t.starttls(gateway.tls_context(client_cert=True))
    t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"250 ")
    t.command(f"RCPT TO:<{nir13 + ins_key(nir13)}@patient.mssante.fr>", r"550 ")
    t.command("DATA", r"5\d\d ")  # refused: no valid recipient
    for line in BODY:  # the client streams its body anyway
        t.command(line, r"5\d\d ")
    t.close()

    def logged() -> str | None:
        text = gateway.log()
        return text if "unrecognised" in text else None

    log = wait_until(
        logged,
        timeout=15,
        message="the unknown commands were not logged at all",
    )
    for line in BODY:
        for word in line.split():
            assert word.lower() not in log.lower(), f"{word!r} reached the log"
    assert REDACTED in log


def test_j2_filter_keeps_the_peer_and_drops_client_text() -> None:
    record = logging.LogRecord(
        "mail.log",
        logging.WARNING,
        __file__,
        1,
        "%r unrecognised: %s",
        (("192.0.2.7", 4567), "Zanzibarquux"),
        None,
    )
    assert ClientTextFilter().filter(record)
    message = record.getMessage()
    assert "192.0.2.7" in message and "Zanzibarquux" not in message and REDACTED in message

    formatted = logging.LogRecord(
        "mail.log", logging.WARNING, __file__, 1, "auth_PLAIN: secret text", None, None
    )
    ClientTextFilter().filter(formatted)
    assert formatted.getMessage() == f"auth_PLAIN: {REDACTED}"
