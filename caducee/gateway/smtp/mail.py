"""MAIL stage (B1, B2, A5): is the peer a trust-space operator, and the sender of its domains?"""

from __future__ import annotations

from email.errors import HeaderParseError
from email.headerregistry import Address

from caducee.directory.trust_models import DomainError, to_ascii_domain
from caducee.gateway.smtp.protocol import PeerIdentity
from caducee.policies.inbound import MAIL_CHAIN, SessionFacts
from caducee.policies.verdict import Verdict, first_refusal


def split_address(address: str) -> tuple[str, str] | None:
    """``(local part, A-label domain)`` of an address, or None when it is not one."""
    if address.count("@") != 1:
        return None
    local, _, domain = address.rpartition("@")
    if not local or not domain or any(c in local for c in " <>\r\n"):
        return None
    try:
        Address(username=local, domain=domain)
        return local, to_ascii_domain(domain)
    except (DomainError, HeaderParseError, ValueError, IndexError):
        return None


def sender_facts(
    identity: PeerIdentity,
    sender: str,
    trusted: frozenset[str],
    local_domains: frozenset[str],
    plaintext_allowed: bool,
) -> SessionFacts:
    """Gather the facts MAIL FROM is judged on."""
    parts = split_address(sender) if sender else None
    return SessionFacts(
        tls=identity.tls,
        plaintext_allowed=plaintext_allowed,
        client_certificate=identity.client_certificate,
        certificate_names_trusted_domain=any(d in trusted for d in identity.certificate_domains),
        sender=sender,
        sender_syntax_ok=parts is not None,
        sender_domain_trusted=parts is not None and parts[1] in trusted,
        sender_domain_hosted_here=parts is not None and parts[1] in local_domains,
    )


def local_domains(patient_domain: str, hosted: tuple[str, ...]) -> frozenset[str]:
    """The A-label forms of every domain whose mailboxes live here."""
    domains = set()
    for domain in (patient_domain, *hosted):
        try:
            domains.add(to_ascii_domain(domain))
        except DomainError:
            continue
    return frozenset(domains)


def judge_sender(facts: SessionFacts) -> Verdict | None:
    """The MAIL chain's verdict (None: go on)."""
    return first_refusal(MAIL_CHAIN, facts)
