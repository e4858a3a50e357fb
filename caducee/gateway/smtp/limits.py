"""Limits every SMTP port enforces the same way: declared size (RFC 1870) and recipients.

The rows are :data:`caducee.policies.limits.ENVELOPE_LIMIT_CHAIN`'s; this module gathers
their facts from aiosmtpd's options and envelope.
"""

from __future__ import annotations

from aiosmtpd.smtp import Envelope

from caducee.policies.limits import ENVELOPE_LIMIT_CHAIN, EnvelopeLimitFacts
from caducee.policies.verdict import Verdict, first_refusal


def declared_size_refusal(options: list[str], limit: int) -> Verdict | None:
    """The verdict refusing a MAIL whose ``SIZE=`` exceeds ``limit``; None when it fits."""
    declared = next((o[5:] for o in options if o.upper().startswith("SIZE=")), None)
    size = int(declared) if declared is not None and declared.isdigit() else None
    return first_refusal(ENVELOPE_LIMIT_CHAIN, EnvelopeLimitFacts(size, limit))


def recipients_refusal(envelope: Envelope, limit: int) -> Verdict | None:
    """The verdict refusing one more RCPT past ``limit``; None when there is room."""
    facts = EnvelopeLimitFacts(recipients=len(envelope.rcpt_tos), recipient_limit=limit)
    return first_refusal(ENVELOPE_LIMIT_CHAIN, facts)
