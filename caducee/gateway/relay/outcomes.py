"""What one attempt meant for one recipient: delivered, try again, or failed (C5, G4).

Every way an attempt can end becomes an :class:`Outcome` carrying the facts a
DSN needs (enhanced status, reply, remote host) and a verdict:

* a ``2xx`` reply: delivered;
* a ``4xx`` reply, a refused or timed-out connection, a DNS failure, a peer
  without STARTTLS or with a certificate that does not verify: try again;
* a ``5xx`` reply, a domain that does not exist or accepts no mail, a domain
  outside the trust space: failed now.

A peer's bad certificate (unknown CA, expired, not naming a trust-space domain)
is a *temporary* failure with status ``4.7.5``, the same choice as Postfix's
mandatory TLS: the usual cause is an operator's late renewal or an anchor not
yet imported, which is fixed within hours and must not lose mail. Nothing is
ever sent in clear meanwhile. When the retry period ends, :func:`expire` turns
the last temporary outcome into a permanent one (``5.7.5`` here), and the
sender gets the failure DSN with the reason.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_MAX_TEXT = 500
LOCAL_DIAGNOSTIC = "X-Caducee"


class Verdict(enum.StrEnum):
    """What happens to the recipient next."""

    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt for one recipient."""

    verdict: Verdict
    status: str
    """Enhanced status code (RFC 3463)."""
    code: int | None = None
    """The SMTP reply code, when a server answered."""
    text: str | None = None
    """The server's reply (``550 5.1.1 ...``) or our own reason; one line, bounded."""
    remote_mta: str | None = None
    diagnostic_type: str = "smtp"

    @property
    def summary(self) -> str:
        """Codes only (no reply text): what logs and ``caducee queue list`` show."""
        return f"{self.code} {self.status}" if self.code is not None else self.status


def one_line(text: str) -> str:
    """A reply or reason on one line, bounded."""
    return " ".join(text.split())[:_MAX_TEXT]


def from_reply(code: int, message: str, remote_mta: str | None) -> Outcome:
    """The outcome of an SMTP reply (RFC 5321 §4.2.1; enhanced code per RFC 2034 if given)."""
    flat = one_line(message)
    klass = code // 100
    match = _ENHANCED.match(flat)
    status = ".".join(match.groups()) if match and int(match.group(1)) == klass else f"{klass}.0.0"
    if klass == 2:
        verdict = Verdict.DELIVERED
    elif klass == 5:
        verdict = Verdict.FAILED
    else:  # 4xx, and anything unexpected (1xx/3xx at the wrong time): try again later
        verdict = Verdict.RETRY
        if klass != 4:
            status = "4.0.0"
    return Outcome(verdict, status, code, one_line(f"{code} {flat}"), remote_mta)


def retry(status: str, reason: str, remote_mta: str | None = None) -> Outcome:
    """A temporary failure of ours (network, DNS, TLS...): try again later."""
    return Outcome(Verdict.RETRY, status, None, one_line(reason), remote_mta, LOCAL_DIAGNOSTIC)


def failed(status: str, reason: str, remote_mta: str | None = None) -> Outcome:
    """A permanent failure decided without a server's reply (no such domain, trust space...)."""
    return Outcome(Verdict.FAILED, status, None, one_line(reason), remote_mta, LOCAL_DIAGNOSTIC)


def delivered_locally(host: str) -> Outcome:
    """Delivered into a mailbox hosted here."""
    return Outcome(Verdict.DELIVERED, "2.0.0", None, "delivered to a hosted mailbox", host)


def as_retry(outcome: Outcome) -> Outcome:
    """A server's refusal that must not be final (a greeting other than 220): class 4."""
    if outcome.verdict is Verdict.RETRY:
        return outcome
    _klass, _, rest = outcome.status.partition(".")
    return replace(outcome, verdict=Verdict.RETRY, status=f"4.{rest or '0.0'}")


def expire(outcome: Outcome) -> Outcome:
    """The permanent form of a temporary outcome when the retry period is over.

    The status keeps its subject and detail with class 5 (``4.7.5`` → ``5.7.5``);
    a status without detail becomes ``5.4.7`` (delivery time expired).
    """
    if outcome.verdict is not Verdict.RETRY:
        return outcome
    _klass, subject, detail = [*outcome.status.split("."), "0", "0"][:3]
    status = "5.4.7" if (subject, detail) == ("0", "0") else f"5.{subject}.{detail}"
    return replace(outcome, verdict=Verdict.FAILED, status=status)


# Our own reasons, as (status, text): one place, so DSNs and the queue listing agree.
CONNECT_FAILED = ("4.4.1", "no answer from the remote host (connection refused or timed out)")
CONNECTION_LOST = ("4.4.2", "the connection to the remote host was lost")
DNS_TEMPORARY = ("4.4.3", "the domain's mail servers could not be looked up (DNS)")
NO_SUCH_DOMAIN = ("5.1.2", "the recipient's domain does not exist")
NULL_MX = ("5.1.10", "the recipient's domain accepts no mail (null MX)")
BAD_ADDRESS = ("5.1.3", "the recipient address is not valid")
NO_STARTTLS = ("4.7.4", "the remote host does not offer STARTTLS; mail is never sent in clear")
TLS_FAILED = ("4.7.5", "TLS failed: the remote host's certificate could not be verified")
TLS_NAME = ("4.7.5", "the remote host's certificate names no domain of the trust space")
NO_ANCHORS = ("4.7.5", "no trust anchor is configured: remote certificates cannot be verified")
OUTSIDE_TRUST_SPACE = ("5.7.1", "the recipient's domain is not in the trust space")
SIGNING_FAILED = ("4.3.5", "the message could not be DKIM-signed (signing key unavailable)")
NO_SMTPUTF8 = ("5.6.7", "the address needs SMTPUTF8, which the remote host does not offer")
TOO_SLOW = ("4.4.7", "the attempt took too long and was abandoned")
UNKNOWN_MAILBOX = ("5.1.1", "no such mailbox here")
MAILBOX_CLOSED = ("5.2.1", "the mailbox is closed")
MAILBOX_SUSPENDED = ("4.2.1", "the mailbox is suspended")
