"""Filing's parser gives the tree :mod:`email` gives (E1, E4, issue 19).

``parse_mail`` sets large ``-``-free bodies aside before :mod:`email` parses a message and puts
them back after, checking that each went back to exactly one leaf part. What a patient's record
gets depends on that tree — which parts are attachments, their names, their bytes — so these
tests compare the two parsers on real reports and on messages built to mislead the shortcut,
part by part, headers and undecoded payloads included.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import Message

import pytest

from caducee.records import mailparse
from caducee.records.filing import mail_attachments
from caducee.records.mailparse import parse_mail
from tests.harness.reports import SAMPLES, b64, build_mail, n1_xdm, pdf_part, xdm_part

CDA = (
    SAMPLES / "ansforge-TestContenuCDA-3-0/ExemplesCDA/BIO-CR-BIO_2024.01_TSH_1.xml"
).read_bytes()
BIG = bytes(range(256)) * 64  # 16 KiB: its base64 is well over MIN_BODY


def _parts(message: Message) -> Iterator[tuple[object, ...]]:
    """Every part in order: type, headers, undecoded payload (or number of children), edges."""
    stack = [message]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed(payload))
            payload = len(payload)
        yield (
            part.get_content_type(),
            tuple(part.raw_items()),
            payload,
            part.preamble,
            part.epilogue,
        )


def _same_as_email(raw: bytes) -> None:
    reference = message_from_bytes(raw, policy=policy.default)
    fast = parse_mail(raw)
    assert list(_parts(fast)) == list(_parts(reference))
    assert mail_attachments(fast) == mail_attachments(reference)
    assert fast.as_bytes() == reference.as_bytes()


def _multipart(boundary: str, *parts: str, preamble: str = "", epilogue: str = "") -> str:
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    return (
        f"From: labo@labo.mssante.fr\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"{preamble}{body}--{boundary}--\r\n{epilogue}"
    )


def _base64_part(name: str, data: bytes = BIG) -> str:
    return (
        f'Content-Type: application/pdf; name="{name}"\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64(data)}"
    )


LONG_TEXT = ("Compte rendu sans tiret aucun. " * 40 + "\r\n") * 8


def _built_cases() -> dict[str, bytes]:
    pdf = _base64_part("cr.pdf")
    attached_message = "Content-Type: message/rfc822\r\n\r\n" + _multipart("inner", pdf)
    return {
        "report with a PDF": build_mail([pdf_part(BIG)]),
        "report with an XDM archive": build_mail([xdm_part(n1_xdm(CDA))]),
        "XDM archive and PDF": build_mail([xdm_part(n1_xdm(CDA)), pdf_part(BIG, "b.pdf")]),
        "line feeds only": _multipart("b1", pdf, _base64_part("two.pdf"))
        .replace("\r\n", "\n")
        .encode(),
        "nested multiparts": _multipart(
            "outer",
            'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
            f"--alt\r\nContent-Type: text/plain\r\n\r\n{LONG_TEXT}\r\n--alt--",
            pdf,
        ).encode(),
        "attached message holding a PDF": _multipart("b2", attached_message).encode(),
        "attached message in base64": _multipart(
            "b3",
            f"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64(BIG)}",
        ).encode(),
        "a boundary-like line email does not take": _multipart(
            "b4", pdf.replace("\r\n", "\r\n--b4 not a delimiter\r\n", 1)
        ).encode(),
        "a delimiter with text after it": _multipart("b5", pdf)
        .replace("--b5--", "--b5--trailing")
        .encode(),
        "no closing delimiter": _multipart("b6", pdf).replace("--b6--\r\n", "").encode(),
        "large preamble and epilogue": _multipart(
            "b7", pdf, preamble=LONG_TEXT, epilogue=LONG_TEXT
        ).encode(),
        "a paragraph break in a text body": _multipart(
            "b8", f"Content-Type: text/plain\r\n\r\nfirst - line\r\n\r\n{LONG_TEXT}", pdf
        ).encode(),
        "no blank line after a part's header": _multipart(
            "b9", pdf.replace("base64\r\n\r\n", "base64\r\n")
        ).encode(),
        "the shortcut's own word in a body": _multipart(
            "b10", _base64_part("x.pdf", b"caduceebody0" * 2000), pdf
        ).encode(),
        "digest parts without a type": _multipart("b11", LONG_TEXT, "\r\n" + LONG_TEXT)
        .replace("multipart/mixed", "multipart/digest")
        .encode(),
        "carriage returns alone": _multipart("b12", pdf).replace("\r\n", "\r").encode(),
        "8-bit bytes in a large body": _multipart(
            "b13", "Content-Type: text/plain; charset=latin-1\r\n\r\n" + LONG_TEXT
        ).encode("latin-1")
        + "é".encode("latin-1"),
        "a multipart without a boundary inside one": _multipart(
            "b14", f"Content-Type: multipart/mixed\r\n\r\n{b64(BIG)}", pdf
        ).encode(),
        "single part, no delimiter": (
            "From: a@b.fr\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64(BIG)
        ).encode(),
    }


CASES = _built_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_e1_filing_parses_a_message_as_email_does(name: str) -> None:
    _same_as_email(CASES[name])


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("report with a PDF", True),
        ("nested multiparts", True),
        ("attached message holding a PDF", True),
        ("a boundary-like line email does not take", False),
        ("a paragraph break in a text body", False),
        ("large preamble and epilogue", False),
    ],
)
def test_e1_the_shortcut_is_taken_only_where_it_gives_the_same_tree(name: str, taken: bool) -> None:
    """Both paths are exercised: reports take the shortcut, misleading messages fall back."""
    token = b"caduceebodytest"
    reduced, bodies = mailparse._set_aside(CASES[name], token)
    assert bodies, "a large body was found to set aside"
    assert len(reduced) < len(CASES[name])
    message = message_from_bytes(reduced, policy=policy.default)
    assert mailparse._restore(message, token, bodies) is taken


def test_e1_random_damage_never_makes_the_parsers_disagree() -> None:
    """Delimiters, blank lines and dashes dropped anywhere into a report: same tree every time."""
    base = _multipart("b", _base64_part("a.pdf"), f"Content-Type: text/plain\r\n\r\n{LONG_TEXT}")
    damage = ["\r\n", "\r\n\r\n", "-", "--b", "\r\n--b\r\n", "\r\n--b--\r\n", "\n\n", ":"]
    rng = random.Random(19)
    for _ in range(300):
        text = base
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice(damage) + text[at:]
        _same_as_email(text.encode())
