"""Limits every SMTP port enforces the same way: declared size (RFC 1870) and recipients."""

from __future__ import annotations

from aiosmtpd.smtp import Envelope

TOO_BIG = "552 5.3.4 Message size exceeds the maximum accepted here"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"


def declared_size_refusal(options: list[str], limit: int) -> str | None:
    """The reply refusing a MAIL whose ``SIZE=`` exceeds ``limit``; None when it fits."""
    declared = next((o[5:] for o in options if o.upper().startswith("SIZE=")), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return TOO_BIG
    return None


def recipients_refusal(envelope: Envelope, limit: int) -> str | None:
    """The reply refusing one more RCPT past ``limit``; None when there is room."""
    return TOO_MANY_RECIPIENTS if len(envelope.rcpt_tos) >= limit else None
