"""Mail the gateway itself sends: receipts, notices, DSNs and relayed submissions (C5, G2–G4).

Whatever leaves the gateway goes through :func:`queue_outbound` inside the
transaction that decided to send it: the message bytes become an encrypted
blob and one ``relay`` job carries the envelope. The relay worker (outbound
SMTP with our client certificate, DKIM signature, retries, DSNs) or local
delivery takes it from there; nothing is sent from inside a request.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from caducee.storage.blobs import BlobStore
from caducee.storage.jobs import JobQueue

RELAY_JOB = "relay"


def queue_outbound(
    session: Session,
    blobs: BlobStore,
    queue: JobQueue,
    *,
    envelope_from: str,
    recipients: Sequence[str],
    content: bytes,
    purpose: str,
) -> int:
    """Store ``content`` encrypted and queue its delivery to ``recipients``; return the job id.

    ``envelope_from`` is ``""`` for the null sender (DSNs and MDNs, RFC 5321
    §4.5.5). ``purpose`` (``mdn``, ``dsn``, ``submission``…) is kept for the
    operator's queue listing; it never holds content.
    """
    if not recipients:
        raise ValueError("an outbound message needs at least one recipient")
    blob_id = blobs.write(session, content)
    return queue.enqueue(
        session,
        RELAY_JOB,
        {
            "blob_id": blob_id,
            "envelope_from": envelope_from,
            "recipients": [r.lower() for r in recipients],
            "purpose": purpose,
        },
        max_attempts=1000,
    )
