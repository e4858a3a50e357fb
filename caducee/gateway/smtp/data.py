"""DATA stage (B3, B4, D2, D3): judge the content, add trace headers, build the delivery.

Only the header block is parsed here (the body may be 25 MB); the document
readers run later, in the filing job, never in the network-facing process
path (Postfix's insulation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from email.utils import format_datetime, getaddresses

from caducee.gateway.dkim_verify import DkimOutcome
from caducee.gateway.smtp.mail import split_address
from caducee.gateway.smtp.protocol import PeerIdentity
from caducee.mailboxes.accounts.store import normalise_address
from caducee.policies.exchange import ExchangeFacts
from caducee.policies.exchange import ends_exchange as exchange_ends
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
        ends_exchange=exchange_ends(ExchangeFacts(subject=subject, mss_mes=mss)),
        multipart=content_type.startswith("multipart/"),
        dkim_signed=signed,
    )


# report-type (RFC 6522) -> the machine-readable part it announces (RFC 3464, RFC 8098).
REPORT_PARTS = {
    "delivery-status": "message/delivery-status",
    "disposition-notification": "message/disposition-notification",
}
# Fields a report block must have to be a DSN recipient block or an MDN.
_REPORT_FIELDS = {
    "delivery-status": ("final-recipient", "action", "status"),
    "disposition-notification": ("final-recipient", "disposition"),
}
_ORIGINAL_ID_FIELDS = ("Original-Message-ID", "X-Original-Message-ID")
_MAX_ORIGINAL_IDS = 20
# Parts that return the original message or its header block (RFC 6522, RFC 6533).
_RETURNED_PARTS = frozenset(
    {"text/rfc822-headers", "message/rfc822", "message/global", "message/global-headers"}
)


@dataclass(frozen=True)
class ReportFacts:
    """What a message under the null sender says of itself as a report (B2)."""

    well_formed: bool
    original_ids: tuple[str, ...]
    """Message-IDs the report is about: Original-Message-ID of the report part, Message-ID of
    the returned message or header block, then In-Reply-To/References of the report."""


NOT_A_REPORT = ReportFacts(False, ())


def _ids(values: Sequence[object]) -> list[str]:
    found: list[str] = _MESSAGE_ID.findall(" ".join(str(v) for v in values))
    return found


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a report part (compat32 parses them as sub-messages)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):  # a transfer-encoded part: parse its decoded text
        decoded = part.get_payload(decode=True)
        if isinstance(decoded, bytes):
            return [BytesHeaderParser(policy=compat32).parsebytes(decoded)]
    return []


def read_report(content: bytes) -> ReportFacts:
    """Is ``content`` a well-formed DSN or MDN, and which messages is it about? (B2)

    Well-formed: ``multipart/report`` whose ``report-type`` is ``delivery-status`` or
    ``disposition-notification`` and which holds the matching machine-readable part, with a
    recipient block (``Final-Recipient``, ``Action``, ``Status``) or the MDN fields
    (``Final-Recipient``, ``Disposition``). The whole message is parsed: called only for
    mail under the null sender to a patient.
    """
    try:
        message = BytesParser(policy=compat32).parsebytes(content)
        if message.get_content_type() != "multipart/report":
            return NOT_A_REPORT
        report_type = str(message.get_param("report-type", "") or "").strip().lower()
        expected = REPORT_PARTS.get(report_type)
        children = message.get_payload()
        if expected is None or not isinstance(children, list):
            return NOT_A_REPORT
        well_formed = False
        found: list[str] = []
        for child in children:
            if not isinstance(child, Message):
                continue
            kind = child.get_content_type()
            if kind == expected:
                for block in _blocks(child):
                    names = {name.lower() for name in block}
                    if all(name in names for name in _REPORT_FIELDS[report_type]):
                        well_formed = True
                    for name in _ORIGINAL_ID_FIELDS:
                        found += _ids(block.get_all(name, []))
            elif kind in _RETURNED_PARTS:
                for block in _blocks(child):
                    found += _ids(block.get_all("Message-ID", []))
        found += _ids(message.get_all("In-Reply-To", []) + message.get_all("References", []))
    except (ValueError, TypeError, IndexError, AttributeError, LookupError, HeaderParseError):
        return NOT_A_REPORT
    if not well_formed:
        return NOT_A_REPORT
    return ReportFacts(True, tuple(dict.fromkeys(found))[:_MAX_ORIGINAL_IDS])


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
    report: ReportFacts = NOT_A_REPORT,
    report_about_sent: bool = False,
) -> ContentFacts:
    """Gather the facts the DATA chain is judged on.

    ``report`` and ``report_about_sent`` matter only under the null sender to a patient (B2):
    the caller reads the body and looks the original Message-IDs up only then.
    """
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
        well_formed_report=report.well_formed,
        report_about_sent=report.well_formed and report_about_sent,
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
