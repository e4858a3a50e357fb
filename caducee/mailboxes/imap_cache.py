"""The encrypted IMAP structure of a message, written when the message is stored.

A first IMAP listing of mail that arrived by SMTP used to pay, per message, a
decryption of the whole message, a MIME parse, an encryption and a commit
(issue 15: the cold listing ran at 0.14× Dovecot). Delivery now seals the
structure beside the message (:func:`seal_structure`) and records it in the
same transaction (:func:`record_structure`), so IMAP only decrypts a small
blob. This module sits apart from :mod:`caducee.mailboxes.imap_store` because
delivery cannot import the store (the store imports delivery's folder helpers).
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from caducee.mailboxes.imap_models import StructureCache
from caducee.mailboxes.imap_structure import STRUCTURE_VERSION, parse_message
from caducee.storage.blobs import BlobStore, SealedBlob
from caducee.storage.db import utcnow

_CACHE = cast(Table, StructureCache.__table__)


def seal_structure(blobs: BlobStore, content: bytes) -> SealedBlob | None:
    """The encrypted IMAP structure of a message, ready to record (best outside transactions).

    None if the parser fails: a parser defect must never cost a delivery (the
    message is still stored; IMAP then tries again at first access, where a
    failure costs one FETCH, not the mail).
    """
    try:
        structure = parse_message(content)
    except Exception:  # see above; the parser is fuzzed not to raise
        return None
    return blobs.seal(structure.to_json())


def record_structure(
    session: Session, blobs: BlobStore, message_id: int, sealed: SealedBlob
) -> None:
    """Record a structure sealed by :func:`seal_structure` for ``message_id`` (caller commits)."""
    session.connection().execute(
        insert(_CACHE).values(
            message_id=message_id,
            blob_id=blobs.record(session, sealed),
            version=STRUCTURE_VERSION,
            created_at=utcnow(),
        )
    )
