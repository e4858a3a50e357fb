"""DKIM signing of the mail we relay to other operators (C5): RFC 6376, RFC 8463.

Every message that leaves the gateway is signed for the domain of its ``From``
header (or the nearest parent domain we hold a key for), so the receiving
operator can check it came from us (its B4). Keys:

* the default ``[dkim] selector`` and ``private_key`` sign for every domain of
  ours: the hosted domains, the patient domain and the gateway's host name;
* ``[dkim] domain_keys`` overrides that per domain with ``"selector:key file"``,
  or several comma-separated ``"selector:key file"`` to sign twice (an RSA and an
  Ed25519 key, as RFC 8463 §4 suggests while verifiers catch up). Rotating a
  key is publishing the new selector in DNS, then switching the setting.

The algorithm follows the key: RSA keys give ``rsa-sha256``, Ed25519 keys
``ed25519-sha256`` (RFC 8463: Ed25519 over the SHA-256 hash of the header
data). Canonicalisation is ``relaxed/relaxed`` (RFC 6376 §3.4.2, §3.4.4),
written here on bytes; the signature itself is computed by ``cryptography``
(OpenSSL). dkimpy's signer does its RSA arithmetic in pure Python and manages
about a hundred messages a second on our machines, less than the inbound SMTP
path accepts (``bench/dkim``); its verifier checks our signatures in the tests.

Headers signed are the usual identifying and MIME ones when present; the
singletons of RFC 5322 (From, Subject, Date, To, ...) are signed one more
time than they occur ("over-signing", RFC 6376 §8.15), so a header added on
the way breaks the signature instead of changing what the reader sees.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from caducee.config import ConfigError, Settings

SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "auto-submitted",
    "disposition-notification-to",
    "x-mss-mes",
    "x-mss-codecda",
    "x-mss-ins",
    "x-mss-nil",
)
OVERSIGNED: frozenset[str] = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "to",
        "cc",
        "in-reply-to",
        "references",
    }
)
RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_MAX_HEADER_LINE = 78

SigningKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class DkimConfigError(ConfigError):
    """A DKIM key setting cannot be used; the message names the setting or the file.

    A :class:`~caducee.config.ConfigError`: the CLI shows it as one sentence.
    """


@dataclass(frozen=True)
class DkimKey:
    """One signing key and the selector that publishes its public half."""

    selector: str
    key: SigningKey

    @property
    def algorithm(self) -> str:
        return ED25519_SHA256 if isinstance(self.key, ed25519.Ed25519PrivateKey) else RSA_SHA256

    def dns_record(self) -> str:
        """The TXT value to publish at ``<selector>._domainkey.<domain>``."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            raw = self.key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def load_key(path: Path, selector: str) -> DkimKey:
    """Read a PEM private key (RSA or Ed25519) for ``selector``."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DkimConfigError(f"cannot read DKIM key {path}: {error.strerror or error}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise DkimConfigError(f"{path} is not an unencrypted PEM private key: {error}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DkimConfigError(f"{path}: DKIM keys are RSA or Ed25519")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 1024:
        raise DkimConfigError(f"{path}: an RSA DKIM key has at least 1024 bits (RFC 8301)")
    return DkimKey(selector, key)


# -- canonicalisation (RFC 6376 §3.4) ---------------------------------------------------


def normalise_line_ends(message: bytes) -> bytes:
    """Every line end as CRLF and a final CRLF: the message exactly as SMTP DATA carries it.

    Signing anything else would sign bytes the receiver never sees (a body without a
    final line break gets one on the wire, and relaxed canonicalisation then differs).
    """
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:  # counting copies nothing
        message = _LINE_ENDS.sub(b"\r\n", message)
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(header fields as (lower-case name, whole field without its final CRLF), body).

    ``message`` has CRLF line ends. A message without a blank line is all header.
    """
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head, body = message, b""
    else:
        head, body = message[: end + 2], message[end + 4 :]
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + b"\r\n" + line)
            continue
        match = _FIELD_NAME.match(line)
        if match is None:
            continue  # not a header field: ignored by signer and verifier alike
        fields.append((match.group(1).lower(), line))
    return fields, body


def relaxed_header(field: bytes) -> bytes:
    """``name:value`` relaxed (RFC 6376 §3.4.2), without the final CRLF."""
    name, _, value = field.partition(b":")
    value = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value)).strip(b" \t")
    return name.strip(b" \t").lower() + b":" + value


def relaxed_body(body: bytes) -> bytes:
    """The body relaxed (RFC 6376 §3.4.4): runs of WSP → one SP, no WSP at line end,
    no empty lines at the end; an empty body stays empty."""
    if not body:
        return b""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    if b"\t" in body or b"  " in body:  # the regex costs ms on large bodies; base64 has no WSP
        body = _WSP_RUN.sub(b" ", body)
    body = body.replace(b" \r\n", b"\r\n")
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def body_hash(body: bytes) -> str:
    """``bh=``: base64 of the SHA-256 of the relaxed body."""
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode("ascii")


def headers_to_sign(
    fields: Sequence[tuple[bytes, bytes]], names: Iterable[str] = SIGNED_HEADERS
) -> list[str]:
    """The ``h=`` list: each wanted header as often as it occurs, singletons once more.

    A singleton listed once more than it occurs (even absent ones: Reply-To decides
    whom a patient may answer, D2) cannot be added on the way without breaking the
    signature.
    """
    present: dict[str, int] = {}
    for raw_name, _field in fields:
        text = raw_name.decode("ascii", "replace")
        present[text] = present.get(text, 0) + 1
    listed: list[str] = []
    for wanted in names:
        count = present.get(wanted, 0) + (1 if wanted in OVERSIGNED else 0)
        listed += [wanted] * count
    return listed


def _selected(fields: Sequence[tuple[bytes, bytes]], names: Sequence[str]) -> list[bytes]:
    """The fields named in ``h=``, each name's instances taken from the bottom up (§5.4.2)."""
    by_name: dict[bytes, list[bytes]] = {}
    for raw_name, field in fields:
        by_name.setdefault(raw_name, []).append(field)
    chosen: list[bytes] = []
    for wanted in names:
        instances = by_name.get(wanted.encode("ascii"))
        if instances:
            chosen.append(instances.pop())  # absent (over-signed) names contribute nothing
    return chosen


def _wrap_h(names: Sequence[str]) -> str:
    """``h=`` value, folded after colons so that no line grows past the usual width."""
    out = ""
    width = 4
    for index, name in enumerate(names):
        piece = name + (":" if index < len(names) - 1 else "")
        if width + len(piece) > _MAX_HEADER_LINE - 2:
            out += "\r\n\t"
            width = 1
        out += piece
        width += len(piece)
    return out


def _wrap_b64(value: str, first: int) -> str:
    """A base64 value folded into chunks (FWS inside b= is ignored by verifiers)."""
    chunks = [value[:first]] + [value[i : i + 72] for i in range(first, len(value), 72)]
    return "\r\n\t".join(chunk for chunk in chunks if chunk)


def signature_field(
    message: bytes,
    *,
    domain: str,
    key: DkimKey,
    timestamp: int | None = None,
    names: Iterable[str] = SIGNED_HEADERS,
) -> bytes:
    """The ``DKIM-Signature`` field (ending in CRLF) to prepend to ``message`` (CRLF ends)."""
    fields, body = split_message(message)
    signed = headers_to_sign(fields, names)
    tags = [
        ("v", "1"),
        ("a", key.algorithm),
        ("c", "relaxed/relaxed"),
        ("d", domain),
        ("s", key.selector),
        ("t", str(int(time.time()) if timestamp is None else timestamp)),
    ]
    head = [
        "DKIM-Signature: " + "; ".join(f"{n}={v}" for n, v in tags[:3]) + ";",
        "\t" + "; ".join(f"{n}={v}" for n, v in tags[3:]) + ";",
    ]
    head.append("\th=" + _wrap_h(signed) + ";")
    head.append(f"\tbh={body_hash(body)};")
    head.append("\tb=")
    unsigned = "\r\n".join(head).encode("ascii")
    data = b"".join(relaxed_header(f) + b"\r\n" for f in _selected(fields, signed))
    data += relaxed_header(unsigned)
    if isinstance(key.key, ed25519.Ed25519PrivateKey):
        signature = key.key.sign(hashlib.sha256(data).digest())
    else:
        signature = key.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    value = base64.b64encode(signature).decode("ascii")
    return unsigned + _wrap_b64(value, 70).encode("ascii") + b"\r\n"


def sign_message(
    message: bytes,
    *,
    domain: str,
    keys: Sequence[DkimKey],
    timestamp: int | None = None,
) -> bytes:
    """``message`` (line ends normalised to CRLF) with one signature per key prepended."""
    message = normalise_line_ends(message)
    stamp = int(time.time()) if timestamp is None else timestamp
    signatures = b"".join(
        signature_field(message, domain=domain, key=key, timestamp=stamp) for key in keys
    )
    return signatures + message


# -- which key for which domain ---------------------------------------------------------


def header_from_domain(message: bytes) -> str | None:
    """The domain of the (first) ``From`` address, lower-case, or None."""
    fields, _ = split_message(normalise_line_ends(message))
    for name, field in fields:
        if name == b"from":
            value = _FOLD.sub(b"", field.partition(b":")[2]).decode("utf-8", "replace")
            for _, address in getaddresses([value]):
                if "@" in address:
                    return address.rpartition("@")[2].strip().lower().rstrip(".")
    return None


def _parse_key_spec(domain: str, spec: str) -> list[tuple[str, str]]:
    pairs = []
    for item in spec.split(","):
        selector, sep, path = item.strip().partition(":")
        if not sep or not selector.strip() or not path.strip():
            raise DkimConfigError(
                f'[dkim] domain_keys."{domain}": expected "selector:key file", got {item!r}'
            )
        pairs.append((selector.strip(), path.strip()))
    return pairs


class DkimSigner:
    """Chooses the key(s) for a message's domain and signs; keys are read on first use.

    Loading lazily keeps commands that never relay (``mailbox list``...) working on
    a home whose key file is missing; the relay then reports the problem per job.
    """

    def __init__(
        self,
        *,
        default: tuple[str, Path] | None,
        default_domains: Iterable[str],
        domain_keys: Mapping[str, Sequence[tuple[str, Path]]] | None = None,
    ) -> None:
        self._default_spec = default
        self._default_domains = frozenset(d.lower().rstrip(".") for d in default_domains if d)
        self._domain_specs = {
            d.lower().rstrip("."): list(specs) for d, specs in (domain_keys or {}).items()
        }
        self._loaded: dict[tuple[str, Path], DkimKey] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner:
        """The signer of a gateway: default key for our domains, ``domain_keys`` overrides."""
        gateway = settings.gateway
        domains = [*gateway.hosted_domains, gateway.patient_domain, gateway.hostname]
        overrides = {
            domain: [
                (selector, settings.path(Path(path)))
                for selector, path in _parse_key_spec(domain, spec)
            ]
            for domain, spec in settings.dkim.domain_keys.items()
        }
        return cls(
            default=(settings.dkim.selector, settings.path(settings.dkim.private_key)),
            default_domains=domains,
            domain_keys=overrides,
        )

    def _key(self, spec: tuple[str, Path]) -> DkimKey:
        with self._lock:
            key = self._loaded.get(spec)
            if key is None:
                key = load_key(spec[1], spec[0])
                self._loaded[spec] = key
            return key

    def keys_for(self, domain: str) -> tuple[str, list[DkimKey]] | None:
        """(signing domain, keys) for ``domain`` or its nearest parent of ours; None if none."""
        labels = domain.lower().rstrip(".").split(".")
        for start in range(len(labels) - 1):
            candidate = ".".join(labels[start:])
            specs = self._domain_specs.get(candidate)
            if specs:
                return candidate, [self._key(spec) for spec in specs]
            if candidate in self._default_domains and self._default_spec is not None:
                return candidate, [self._key(self._default_spec)]
        return None

    def sign(self, message: bytes, *, timestamp: int | None = None) -> tuple[bytes, str | None]:
        """(message to send, signing domain or None when no key of ours covers its From)."""
        domain = header_from_domain(message)
        chosen = self.keys_for(domain) if domain else None
        if chosen is None:
            return normalise_line_ends(message), None
        signing_domain, keys = chosen
        return sign_message(
            message, domain=signing_domain, keys=keys, timestamp=timestamp
        ), signing_domain
