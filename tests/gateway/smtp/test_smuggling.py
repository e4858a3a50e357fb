"""B4: SMTP smuggling. Only CRLF.CRLF ends data; a bare CR or LF refuses the whole message.

Each case hides a second message (to the patient) after a non-standard end of
data. A vulnerable server would store two messages, or one plus the smuggled
one; ours answers ``521 5.5.2`` after the real end of data, stores nothing and
closes the session, so the smuggled commands are never read as commands.
"""

from __future__ import annotations

import pytest

from tests.harness.served import ServedGateway

from .transcript import Transcript

SMUGGLING_ENDS = {
    "lf-dot-lf": b"\n.\n",
    "cr-dot-cr": b"\r.\r",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
}


def _smuggled_tail(gateway: ServedGateway, subject: str) -> bytes:
    patient = gateway.credentials["patient"]["address"]
    sender = gateway.peer["professional"]
    hidden = gateway.message(subject=subject)
    return f"MAIL FROM:<{sender}>\r\nRCPT TO:<{patient}>\r\nDATA\r\n".encode() + hidden + b".\r\n"


def _open(gateway: ServedGateway) -> Transcript:
    t = Transcript("127.0.0.1", gateway.ports["smtp"])
    t.reply()
    t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    t.starttls(gateway.tls_context(client_cert=True))
    t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"250 ")
    t.command(f"RCPT TO:<{gateway.credentials['patient']['address']}>", r"250 ")
    t.command("DATA", r"354 ")
    return t


@pytest.mark.parametrize("name", sorted(SMUGGLING_ENDS))
def test_b4_smuggling_end_of_data_variants_refused(gateway: ServedGateway, name: str) -> None:
    before = gateway.mailbox()
    outer = gateway.message(subject=f"outer {name}")
    t = _open(gateway)
    t.send(outer + SMUGGLING_ENDS[name] + _smuggled_tail(gateway, f"smuggled {name}"))
    answer = t.reply()
    assert answer.startswith("521 5.5.2 Bare CR or LF"), answer
    assert t.closed_by_server()
    t.close()
    after = gateway.mailbox()
    assert len(after) == len(before)
    assert not any(name in m["subject"] for m in after)


@pytest.mark.parametrize("bare", [b"\r", b"\n"], ids=["bare-cr", "bare-lf"])
def test_b4_bare_cr_or_lf_inside_the_body_refused_nothing_stored(
    gateway: ServedGateway, bare: bytes
) -> None:
    before = len(gateway.mailbox())
    message = gateway.message(subject="bare", body="ligne un\nligne deux\n")
    message = message.replace(b"ligne un\r\n", b"ligne un" + bare)
    t = _open(gateway)
    t.send(message + b".\r\n")
    assert t.reply().startswith("521 5.5.2 ")
    assert t.closed_by_server()
    t.close()
    assert len(gateway.mailbox()) == before


def test_b4_pipelined_commands_after_data_are_processed_in_order(gateway: ServedGateway) -> None:
    """Legitimate pipelining (RFC 2920): two transactions in one write both succeed."""
    before = len(gateway.mailbox())
    patient = gateway.credentials["patient"]["address"]
    sender = gateway.peer["professional"]
    t = _open(gateway)
    first = gateway.message(subject="pipelined one")
    second = gateway.message(subject="pipelined two")
    t.send(first + b".\r\n" + f"MAIL FROM:<{sender}>\r\nRCPT TO:<{patient}>\r\nDATA\r\n".encode())
    assert t.reply().startswith("250 2.0.0 ")
    assert t.reply().startswith("250 2.1.0")
    assert t.reply().startswith("250 2.1.5")
    assert t.reply().startswith("354 ")
    t.send(second + b".\r\nQUIT\r\n")
    assert t.reply().startswith("250 2.0.0 ")
    assert t.reply().startswith("221 ")
    t.close()
    subjects = [m["subject"] for m in gateway.mailbox()]
    assert len(subjects) == before + 2
    assert subjects[-2:] == ["pipelined one", "pipelined two"]


def test_b4_dot_stuffing_is_undone(gateway: ServedGateway) -> None:
    message = gateway.message(
        subject="dots", body="avant\n.ligne qui commence par un point\n..deux\nfin\n"
    )
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    t = _open(gateway)
    t.send(stuffed + b".\r\n")
    assert t.reply().startswith("250 2.0.0 "), "DKIM verifies only if the dots were removed exactly"
    t.close()
