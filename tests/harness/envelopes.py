"""Envelopes as the SMTP stage hands them to the delivery, for tests that call it directly."""

from __future__ import annotations

from caducee.mailboxes.delivery import Envelope, Recipient, RecipientRole

PROFESSIONAL = "dr.martin@cabinet.mssante.fr"


def professional_mail(
    address: str, account_id: int, n: int, *, attachments: bool = False
) -> Envelope:
    """Message ``n`` of a professional to the patient at ``address`` (a distinct Message-ID)."""
    message_id = f"<mail-{n}@cabinet.mssante.fr>"
    content = (
        f"From: {PROFESSIONAL}\r\nTo: {address}\r\nSubject: Consultation\r\n"
        f"Message-ID: {message_id}\r\n\r\nBonjour\r\n"
    ).encode()
    return Envelope(
        content=content,
        direction="inbound",
        envelope_from=PROFESSIONAL,
        header_from=PROFESSIONAL,
        message_id=message_id,
        thread_ids=(),
        reply_to=None,
        ends_exchange=False,
        sender_is_professional=True,
        has_attachments=attachments,
        recipients=(Recipient(address, account_id, RecipientRole.PATIENT),),
    )
