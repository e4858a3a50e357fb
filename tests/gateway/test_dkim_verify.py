"""B4: DKIM verification gives dkimpy's own verdict, on the fast path and off it.

``dkim_verify`` hands dkimpy the header block and the body separately when the message has no
bare LF (issue 19: dkimpy's whole-message line split was most of a 1 MiB report's cost). These
tests sign real messages with the demo-style RSA key and compare every verdict with
``dkim.verify`` on the untouched message, for bodies hypothesis makes up: CRLF or bare LF,
trailing blank lines, spaces, tabs, dots; then with the body altered after signing.
"""

from __future__ import annotations

import base64

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caducee.gateway.dkim_verify import verify

DOMAIN = "labo-demo.mssante.fr"
SELECTOR = "bench"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE = _KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
RECORD = "v=DKIM1; k=rsa; p=" + base64.b64encode(
    _KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode("ascii")
KEYS = {f"{SELECTOR}._domainkey.{DOMAIN}": RECORD}
HEADERS = (
    b"From: paul.bernard@labo-demo.mssante.fr\r\n"
    b"To: 279035121518989@patient.mssante.fr\r\n"
    b"Subject: Compte rendu\r\n"
    b"Message-ID: <x@labo-demo.mssante.fr>\r\n"
)


def _signed(body: bytes) -> bytes:
    raw = HEADERS + b"\r\n" + body
    signature = dkim.sign(raw, SELECTOR.encode(), DOMAIN.encode(), PRIVATE)
    return bytes(signature).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + raw


def _dkimpy(message: bytes) -> bool:
    return bool(dkim.verify(message, dnsfunc=lambda name, timeout=5: RECORD.encode()))


_line = st.text(alphabet=st.sampled_from(list("ab .\t-é")), max_size=30).map(str.encode)
_body = st.lists(
    st.tuples(_line, st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])), max_size=12
).map(lambda parts: b"".join(line + end for line, end in parts))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_body, extra=st.sampled_from([b"", b"\r\n", b"x", b" \r\n", b"\n", b"\r\n\r\nmore"]))
def test_b4_the_verdict_is_dkimpys_for_any_body_or_alteration(body: bytes, extra: bytes) -> None:
    message = _signed(body)
    expected = _dkimpy(message)
    outcome = verify(message, DOMAIN, KEYS)
    assert outcome.passed == expected
    altered = message + extra
    assert verify(altered, DOMAIN, KEYS).passed == _dkimpy(altered)


def test_b4_a_large_crlf_report_passes_and_one_changed_byte_fails_it() -> None:
    body = b"".join(b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo%05d\r\n" % n for n in range(20000))
    message = _signed(body)
    assert verify(message, DOMAIN, KEYS).passed
    changed = message[:-10] + (b"A" if message[-10:-9] != b"A" else b"B") + message[-9:]
    outcome = verify(changed, DOMAIN, KEYS)
    assert outcome.result == "fail" and outcome.domain == DOMAIN
    assert verify(HEADERS + b"\r\n" + body, DOMAIN, KEYS).result == "none"
