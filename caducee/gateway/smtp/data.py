"""DATA stage (B3, B4, D2, D3): judge the content, add trace headers, build the delivery.

Only the header block is parsed here (the body may be 25 MB); the document
readers run later, in the filing job, never in the network-facing process
path (Postfix's insulation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime, getaddresses

from caducee.gateway.dkim_verify import DkimOutcome
from caducee.gateway.smtp.mail import split_address
from caducee.gateway.smtp.protocol import PeerIdentity
from caducee.mailboxes.accounts import normalise_address
from caducee.policies.inbound import DATA_CHAIN, ContentFacts
from caducee.policies.verdict import Verdict, first_refusal
from caducee.storage.db import utcnow

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
MAX_HEADER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class HeaderFacts:
    """What the header block says, normalised."""

    parses: bool
    from_addresses: tuple[str, ...]
    reply_to: str | None
    message_id: str | None
    thread_ids: tuple[str, ...]
    ends_exchange: bool
    multipart: bool
    dkim_signed: bool = False


def header_block(content: bytes) -> bytes:
    """The header block of a message (up to and including the blank line)."""
    end = content.find(b"\r\n\r\n")
    if end < 0:
        return content[:MAX_HEADER_BYTES]
    return content[: min(end + 4, MAX_HEADER_BYTES)]


def _decoded(value: object) -> str:
    """A header value with RFC 2047 encoded words decoded."""
    text = str(value or "")
    if "=?" not in text:
        return text
    return str(make_header(decode_header(text)))


def _addresses(values: list[str]) -> tuple[str, ...]:
    return tuple(normalise_address(addr) for _, addr in getaddresses(values) if "@" in addr)


def read_headers(content: bytes) -> HeaderFacts:
    """Parse the header block; a block that cannot be parsed gives ``parses=False``.

    The ``compat32`` policy parses lazily and is several times faster than
    ``default`` here, where only a few fields are read and decoded ourselves.
    """
    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(header_block(content))
        from_values = [str(v) for v in headers.get_all("From", [])]
        reply_values = [str(v) for v in headers.get_all("Reply-To", [])]
        subject = _decoded(headers.get("Subject", ""))
        signed = headers.get("DKIM-Signature") is not None
        mss = str(headers.get("X-MSS-MES", "") or "")
        message_ids = _MESSAGE_ID.findall(str(headers.get("Message-ID", "") or ""))
        thread = _MESSAGE_ID.findall(
            " ".join(
                str(v)
                for v in headers.get_all("In-Reply-To", []) + headers.get_all("References", [])
            )
        )
        content_type = headers.get_content_type()
    except (ValueError, TypeError, IndexError, AttributeError, HeaderParseError):
        return HeaderFacts(False, (), None, None, (), False, False)
    replies = _addresses(reply_values)
    return HeaderFacts(
        parses=True,
        from_addresses=_addresses(from_values),
        reply_to=replies[0] if len(replies) == 1 else None,
        message_id=message_ids[0] if message_ids else None,
        thread_ids=tuple(dict.fromkeys(thread)),
        ends_exchange=subject.strip() == "[FIN]" or mss.strip().upper() == "FIN",
        multipart=content_type.startswith("multipart/"),
        dkim_signed=signed,
    )


def content_facts(
    *,
    size: int,
    size_limit: int,
    headers: HeaderFacts,
    sender: str,
    from_aligned: bool,
    to_patient: bool,
    patient_domain: str,
    dkim_required: bool,
    dkim: DkimOutcome,
) -> ContentFacts:
    """Gather the facts the DATA chain is judged on."""
    return ContentFacts(
        size=size,
        size_limit=size_limit,
        headers_parse=headers.parses,
        has_from=bool(headers.from_addresses),
        null_sender=sender == "",
        from_aligned=from_aligned,
        to_patient=to_patient,
        header_from_is_patient=any(
            (parts := split_address(a)) is not None and parts[1] == patient_domain
            for a in headers.from_addresses
        ),
        dkim_required=dkim_required,
        dkim_pass=dkim.passed,
    )


def judge_content(facts: ContentFacts) -> Verdict | None:
    """The DATA chain's verdict (None: accept the message)."""
    return first_refusal(DATA_CHAIN, facts)


def trace_headers(
    *,
    hostname: str,
    helo: str | None,
    peer: str,
    identity: PeerIdentity,
    queue_id: str,
    sender: str,
    dkim: DkimOutcome,
) -> bytes:
    """``Received`` and ``Authentication-Results`` lines to prepend (RFC 5321, RFC 8601)."""
    protocol = "ESMTPS" if identity.tls else "ESMTP"
    tls = f" ({identity.tls_version} cipher {identity.cipher})" if identity.tls else ""
    certificate = (
        f" client certificate {', '.join(identity.certificate_domains)}"
        if identity.client_certificate
        else ""
    )
    received = (
        f"Received: from {helo or 'unknown'} ([{peer}]){tls}{certificate}\r\n"
        f"\tby {hostname} (Caducée) with {protocol} id {queue_id};\r\n"
        f"\t{format_datetime(utcnow())}\r\n"
    )
    mailfrom = f"smtp.mailfrom={sender}" if sender else "smtp.mailfrom=<>"
    results = f"Authentication-Results: {hostname}; {dkim.header_value()}; {mailfrom}\r\n"
    return (received + results).encode("utf-8")


def valid_address(text: str) -> bool:
    """True when ``text`` parses as a mailbox address."""
    try:
        local, _, domain = text.rpartition("@")
        Address(username=local, domain=domain)
    except (ValueError, IndexError):
        return False
    return bool(local and domain)
