"""C5 DKIM signing: our RFC 6376 / RFC 8463 signer, checked by dkimpy's verifier and RFC vectors."""

from __future__ import annotations

import base64
import hashlib
import re
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caducee.gateway import pki
from caducee.gateway.dkim_sign import (
    DkimConfigError,
    DkimKey,
    DkimSigner,
    _selected,
    body_hash,
    relaxed_header,
    sign_message,
    split_message,
)

DOMAIN = "hopital-demo.mssante.fr"


@pytest.fixture(scope="module")
def rsa_key() -> DkimKey:
    return DkimKey("caducee", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def resolver(*keys: tuple[str, DkimKey]) -> Callable[..., bytes | None]:
    records = {
        f"{key.selector}._domainkey.{domain}".encode(): key.dns_record().encode()
        for domain, key in keys
    }

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.rstrip(b".").lower())

    return lookup


def verify_all(signed: bytes, lookup: Callable[..., bytes | None]) -> list[bool]:
    """dkimpy's verdict on every signature of ``signed``."""
    verifier = dkim.DKIM(signed)
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    results = []
    for index in range(count):
        try:
            results.append(bool(verifier.verify(idx=index, dnsfunc=lookup)))
        except dkim.ValidationError:
            results.append(False)
    return results


@pytest.fixture
def ed25519_in_dkimpy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """dkimpy verifies Ed25519 through PyNaCl, absent here: give it the same calls on
    ``cryptography`` (the signature check itself stays dkimpy's: hashing, canonicalisation)."""

    class BadSignatureError(Exception):
        pass

    class VerifyKey:
        def __init__(self, key: bytes, encoder: object = None) -> None:
            self.key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(key))

        def verify(self, message: bytes, signature: bytes) -> bytes:
            try:
                self.key.verify(signature, message)
            except InvalidSignature:
                raise BadSignatureError from None
            return message

    shim = types.SimpleNamespace(
        signing=types.SimpleNamespace(VerifyKey=VerifyKey),
        encoding=types.SimpleNamespace(Base64Encoder=None),
        exceptions=types.SimpleNamespace(
            BadSignatureError=BadSignatureError, ValueError=ValueError
        ),
    )
    monkeypatch.setattr(dkim, "nacl", shim, raising=False)
    yield


MESSAGES = [
    pytest.param(
        b"From: Dr Claire Martin <claire.martin@hopital-demo.mssante.fr>\r\n"
        b"To: dr.durand@labo.mssante.fr,\r\n\t autre@labo.mssante.fr\r\n"
        b"Subject:   Compte   rendu  \t\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
        b"Message-ID: <abc@hopital-demo.mssante.fr>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Bonjour  \t  docteur,   \r\n\r\nR\xc3\xa9sultats ci-joints.\t\r\n\r\n\r\n",
        id="folded-and-whitespace",
    ),
    pytest.param(
        b"From: claire.martin@hopital-demo.mssante.fr\nSubject: LF only\n\nline\n.dot\n",
        id="bare-lf",
    ),
    pytest.param(b"From: claire.martin@hopital-demo.mssante.fr\r\nSubject: x\r\n\r\n", id="empty"),
    pytest.param(b"From: claire.martin@hopital-demo.mssante.fr\r\nSubject: x\r\n", id="no-body"),
    pytest.param(
        b"Received: from a\r\nFrom: claire.martin@hopital-demo.mssante.fr\r\n"
        b"Received: from b\r\nTo: x@y.fr\r\nTo: z@y.fr\r\n\r\nno final line break",
        id="repeated-headers",
    ),
]


@pytest.mark.parametrize("raw", MESSAGES)
def test_c5_rsa_signature_verifies_with_dkimpy(raw: bytes, rsa_key: DkimKey) -> None:
    signed = sign_message(raw, domain=DOMAIN, keys=[rsa_key])
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert all(len(line) <= 78 for line in signed.split(b"\r\n\r\n")[0].split(b"\r\n")[:8])
    assert verify_all(signed, resolver((DOMAIN, rsa_key))) == [True]


_text = st.text(
    alphabet=st.sampled_from([*"abcXYZ019 .:;,-=\t", "é", "à"]), min_size=0, max_size=40
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    subject=_text,
    extra=st.lists(
        st.tuples(st.sampled_from(["To", "Cc", "Reply-To", "X-Note"]), _text), max_size=4
    ),
    lines=st.lists(_text, max_size=12),
    ending=st.sampled_from(["", "\r\n", "\r\n\r\n", " \t\r\n \r\n"]),
)
def test_c5_any_message_verifies_with_dkimpy(
    rsa_key: DkimKey, subject: str, extra: list[tuple[str, str]], lines: list[str], ending: str
) -> None:
    head = "From: claire.martin@hopital-demo.mssante.fr\r\n" + f"Subject: {subject}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in extra)
    raw = (head + "\r\n" + "\r\n".join(lines) + ending).encode("utf-8")
    signed = sign_message(raw, domain=DOMAIN, keys=[rsa_key])
    assert verify_all(signed, resolver((DOMAIN, rsa_key))) == [True]


def test_c5_body_hash_agrees_with_dkimpy_signer(rsa_key: DkimKey) -> None:
    raw = MESSAGES[0].values[0]
    assert isinstance(raw, bytes)
    theirs = dkim.sign(
        raw,
        b"caducee",
        DOMAIN.encode(),
        pki.key_pem(rsa_key.key),  # type: ignore[arg-type]
        canonicalize=(b"relaxed", b"relaxed"),
    )
    ours = sign_message(raw, domain=DOMAIN, keys=[rsa_key])
    their_bh = theirs.split(b"bh=")[1].split(b";")[0]
    our_bh = ours.split(b"bh=")[1].split(b";")[0]
    assert their_bh == our_bh


def test_c5_canonicalisation_matches_the_rfc_8463_vector() -> None:
    """RFC 8463 Appendix A: our relaxed header and body forms verify the RFC's own signature."""
    signature_field = (
        b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
        b" d=football.example.com; i=@football.example.com;\r\n"
        b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
        b" subject : date : message-id : from : subject : date;\r\n"
        b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
        b" b="
    )
    signature = base64.b64decode(
        "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="
    )
    public = ed25519.Ed25519PublicKey.from_public_bytes(
        base64.b64decode("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    )
    raw = (
        b"From: Joe SixPack <joe@football.example.com>\r\n"
        b"To: Suzie Q <suzie@shopping.example.net>\r\n"
        b"Subject: Is dinner ready?\r\n"
        b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
        b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
        b"\r\n"
        b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n"
    )
    fields, body = split_message(raw)
    assert body_hash(body) == "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
    names = ["from", "to", "subject", "date", "message-id", "from", "subject", "date"]
    data = b"".join(relaxed_header(f) + b"\r\n" for f in _selected(fields, names))
    data += relaxed_header(signature_field)
    public.verify(signature, hashlib.sha256(data).digest())  # raises if we canonicalise wrongly


def test_c5_ed25519_signature_verifies_with_dkimpy(
    rsa_key: DkimKey, ed25519_in_dkimpy: None
) -> None:
    ed_key = DkimKey("ed2026", ed25519.Ed25519PrivateKey.generate())
    raw = MESSAGES[0].values[0]
    assert isinstance(raw, bytes)
    signed = sign_message(raw, domain=DOMAIN, keys=[ed_key, rsa_key])
    assert b"a=ed25519-sha256" in signed.split(b"\r\n")[0]
    assert ed_key.dns_record().startswith("v=DKIM1; k=ed25519; p=")
    lookup = resolver((DOMAIN, ed_key), (DOMAIN, rsa_key))
    assert verify_all(signed, lookup) == [True, True]
    assert verify_all(signed.replace(b"docteur", b"Docteur"), lookup) == [False, False]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"Compte", b"Conte"), id="subject"),
        pytest.param(lambda m: m.replace(b"ci-joints", b"ci-joint"), id="body"),
        pytest.param(lambda m: m + b"ajout\r\n", id="appended-line"),
        pytest.param(
            lambda m: m.replace(b"\r\nFrom:", b"\r\nReply-To: pirate@evil.example\r\nFrom:", 1),
            id="added-reply-to",
        ),
        pytest.param(
            lambda m: m.replace(b"\r\nFrom:", b"\r\nFrom: pirate@evil.example\r\nFrom:", 1),
            id="added-from",
        ),
    ],
)
def test_c5_tampering_breaks_the_signature(
    tamper: Callable[[bytes], bytes], rsa_key: DkimKey
) -> None:
    raw = MESSAGES[0].values[0]
    assert isinstance(raw, bytes)
    signed = sign_message(raw, domain=DOMAIN, keys=[rsa_key])
    assert verify_all(tamper(signed), resolver((DOMAIN, rsa_key))) == [False]


def _key_file(folder: Path, name: str, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> Path:
    path = folder / name
    pki.write_private(path, pki.key_pem(key))  # type: ignore[arg-type]
    return path


def test_c5_per_domain_keys_and_rotation(tmp_path: Path) -> None:
    default = _key_file(tmp_path, "default.key", pki.create_dkim_key())
    old = _key_file(tmp_path, "old.key", pki.create_dkim_key())
    new = _key_file(tmp_path, "new.key", pki.create_dkim_key())
    ed = _key_file(tmp_path, "ed.key", ed25519.Ed25519PrivateKey.generate())

    def signer(clinic_keys: list[tuple[str, Path]]) -> DkimSigner:
        return DkimSigner(
            default=("caducee", default),
            default_domains=[DOMAIN, "patient.mssante.fr", "mx.caducee.localhost"],
            domain_keys={"clinique.mssante.fr": clinic_keys},
        )

    before = signer([("s2025", old)])
    after = signer([("s2026", new), ("ed2026", ed)])  # rotation: new selector, plus Ed25519

    hosted = b"From: a@hopital-demo.mssante.fr\r\nSubject: x\r\n\r\nbody\r\n"
    clinic = b"From: b@clinique.mssante.fr\r\nSubject: x\r\n\r\nbody\r\n"
    sub = b"From: c@service.clinique.mssante.fr\r\nSubject: x\r\n\r\nbody\r\n"
    foreign = b"From: d@labo.example\r\nSubject: x\r\n\r\nbody\r\n"

    signed, domain = before.sign(hosted)
    assert domain == DOMAIN and b"s=caducee;" in signed
    signed, domain = before.sign(clinic)
    assert domain == "clinique.mssante.fr" and b"s=s2025;" in signed
    signed, domain = after.sign(clinic)
    assert (
        signed.count(b"DKIM-Signature:") == 2 and b"s=s2026;" in signed and b"s=ed2026;" in signed
    )
    signed, domain = after.sign(sub)
    assert domain == "clinique.mssante.fr"  # a parent domain of ours signs for its subdomains
    signed, domain = after.sign(foreign)
    assert domain is None and b"DKIM-Signature" not in signed  # never sign another's domain

    key = after.keys_for("clinique.mssante.fr")
    assert key is not None
    rsa_new = key[1][0]
    signed, _ = after.sign(clinic)
    lookup = resolver(("clinique.mssante.fr", rsa_new))
    assert verify_all(signed, lookup)[0] is True  # the RSA one, first (Ed25519 needs its record)


def test_c5_unusable_keys_are_reported_clearly(tmp_path: Path) -> None:
    from caducee.config import ConfigError

    assert issubclass(DkimConfigError, ConfigError)  # the CLI shows one sentence, exit 2
    signer = DkimSigner(default=("caducee", tmp_path / "missing.key"), default_domains=[DOMAIN])
    with pytest.raises(DkimConfigError, match="cannot read DKIM key"):
        signer.sign(b"From: a@hopital-demo.mssante.fr\r\n\r\nx\r\n")
    (tmp_path / "junk.key").write_text("not a key")
    signer = DkimSigner(default=("caducee", tmp_path / "junk.key"), default_domains=[DOMAIN])
    with pytest.raises(DkimConfigError, match="not an unencrypted PEM private key"):
        signer.sign(b"From: a@hopital-demo.mssante.fr\r\n\r\nx\r\n")


def test_c5_signer_from_settings(demo_home: Path) -> None:
    from caducee.config import load_settings

    settings = load_settings(demo_home)
    signer = DkimSigner.from_settings(settings)
    chosen = signer.keys_for("hopital-demo.mssante.fr")
    assert chosen is not None and chosen[1][0].selector == settings.dkim.selector
    assert signer.keys_for(settings.gateway.patient_domain) is not None
    bad = settings.model_copy(
        update={"dkim": settings.dkim.model_copy(update={"domain_keys": {"x.fr": "no-colon"}})}
    )
    with pytest.raises(DkimConfigError, match=re.escape('domain_keys."x.fr"')):
        DkimSigner.from_settings(bad)
